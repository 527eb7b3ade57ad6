"""Run conformance checks against an engine and report PASS/FAIL/SKIP lines."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable

from engines.conformance.checks import CHECKS
from engines.conformance.harness import Check, CheckContext, CheckFailed, CheckSkipped
from engines.conformance.target import EngineTarget

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

# generous: the slowest check (two SIGKILL rounds) takes a few seconds
CHECK_TIMEOUT = 120.0


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        text = f"{self.status} {self.check}"
        if self.detail:
            text += f": {self.detail}" if self.status != PASS else f" ({self.detail})"
        return f"{text} [{self.seconds:.2f}s]"


@dataclass
class Summary:
    engine: str
    results: list[CheckResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count(FAIL) == 0

    def line(self) -> str:
        text = f"engine-check {self.engine}: {self.count(PASS)} passed, {self.count(FAIL)} failed"
        skipped = self.count(SKIP)
        return text + (f", {skipped} skipped" if skipped else "")


def _where(e: BaseException) -> str:
    """file:line of the innermost frame, for unexpected exceptions."""
    tb = traceback.extract_tb(e.__traceback__)
    return f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""


def run_check(target: EngineTarget, check: Check, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """Run one check in a fresh event loop. target.base_dir must be a scratch
    directory: the check creates its data directories inside it."""
    ctx = CheckContext(target, slot=check.name)

    async def go() -> str | None:
        try:
            return await asyncio.wait_for(check.fn(ctx), timeout)
        finally:
            await ctx.close_all()

    start = time.monotonic()

    def result(status: str, detail: str = "") -> CheckResult:
        return CheckResult(check.name, status, detail, time.monotonic() - start)

    try:
        note = asyncio.run(go())
    except CheckSkipped as e:
        return result(SKIP, str(e))
    except CheckFailed as e:
        return result(FAIL, str(e))
    except TimeoutError:
        return result(FAIL, f"timed out after {timeout:.0f}s")
    except Exception as e:
        return result(FAIL, f"unexpected {type(e).__name__}: {e}{_where(e)}")
    return result(PASS, note or "")


def select(names: Iterable[str] | None) -> list[Check]:
    """The checks called names (all when None); unknown names raise ValueError."""
    if not names:
        return list(CHECKS)
    by_name = {c.name: c for c in CHECKS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown checks: {', '.join(unknown)} (known: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def run_checks(
    target: EngineTarget,
    checks: Iterable[Check] | None = None,
    emit: Callable[[str], None] = print,
    keep: bool = False,
    finish: Callable[[Summary], None] | None = None,
) -> Summary:
    """Run checks (default: all) and emit one line per check, then the summary.

    With a base_dir, the checks work in a fresh scratch directory inside it
    (removed afterwards unless keep), so pointing the suite at a directory
    never touches what is already there. finish(summary), run before the
    summary line, removes or reports what the checks left anywhere else (a
    TiKV run's key prefix)."""
    scratch = None
    if target.base_dir is not None:
        scratch = tempfile.mkdtemp(prefix=f"engine-check-{target.name}-", dir=target.base_dir)
        target = target.with_base_dir(scratch)
    summary = Summary(target.name)
    try:
        for check in CHECKS if checks is None else checks:
            res = run_check(target, check)
            summary.results.append(res)
            emit(res.line())
            if res.check == "open" and res.status == FAIL:
                emit("stopping: the engine does not open")
                break
    finally:
        if scratch is not None:
            if keep:
                emit(f"check data kept in {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        if finish is not None:
            finish(summary)
    emit(summary.line())
    return summary
