"""`brain engine-check --engine tikv`: the conformance suite on a real TiKV cluster.

The suite gives every check a fresh engine of its own (for local engines, a
data directory per check). On TiKV the equivalent is a key prefix per check:
each check runs under <key prefix>engine-check/<run id>/<check>/, so checks
never see each other's keys, nor any other data in the cluster, and several
runs may share a cluster. The engine options travel as JSON to the checks'
helper processes, so the kill checks reopen the same prefix there.

A run removes its keys afterwards (unless kept). The conformance checks that
need a data directory (locked-data-dir) skip: TiKV has none, and any number
of processes may open the same prefix.
"""
from __future__ import annotations

import asyncio
import secrets
from typing import Any, Callable, Iterable

from engines.base import WriteBatch
from engines.conformance import Check, EngineTarget, Summary, run_checks
from engines.conformance.runner import FAIL
from engines.tikv.open import DEFAULT_KEY_PREFIX, encode_prefix, open_tikv

# keys deleted per transaction when a run cleans up
CLEANUP_BATCH = 1000


def run_prefix(options: dict[str, Any]) -> str:
    """A fresh prefix for one run, under the user's key prefix."""
    base = options.get("key_prefix", DEFAULT_KEY_PREFIX)
    if isinstance(base, bytes):
        base = base.decode()
    return f"{base}engine-check/{secrets.token_hex(4)}/"


def run_target(options: dict[str, Any], prefix: str) -> EngineTarget:
    """The checks' target: each check opens the engine under <prefix><check>/."""
    return EngineTarget("tikv", dict(options, key_prefix=prefix), slot_prefix_option="key_prefix")


async def delete_prefix(options: dict[str, Any], prefix: str | bytes) -> int:
    """Delete every key under prefix; how many there were."""
    engine = open_tikv(**dict(options, key_prefix=encode_prefix(prefix)))
    removed = 0
    try:
        while True:
            keys = await engine.scan(b"", None, limit=CLEANUP_BATCH, keys_only=True)
            if not keys:
                return removed
            wb = WriteBatch()
            for k, _ in keys:
                wb.delete(k)
            await engine.write(wb)
            removed += len(keys)
    finally:
        await engine.close()


def run_tikv_checks(
    options: dict[str, Any],
    checks: Iterable[Check] | None = None,
    emit: Callable[[str], None] = print,
    keep: bool = False,
) -> Summary:
    """engines.conformance.run_checks under a fresh run prefix, each check
    under <run prefix><check>/ (EngineTarget.slot_prefix_option)."""
    prefix = run_prefix(options)
    target = run_target(options, prefix)

    def finish(summary: Summary) -> None:
        if keep:
            emit(f"check data kept in TiKV under key prefix {prefix!r}")
        elif any(r.status != FAIL or r.check != "open" for r in summary.results):
            try:
                asyncio.run(delete_prefix(options, prefix))
            except Exception as e:
                emit(f"note: could not remove the check data under key prefix {prefix!r}: {e}")

    return run_checks(target, checks, emit=emit, keep=keep, finish=finish)
