"""Parent side of the helper processes (engines.conformance.child)."""
from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import engines
from engines.conformance.harness import CheckFailed
from engines.conformance.target import EngineTarget


def _env() -> dict[str, str]:
    # the child must import the same engines package as this process, even
    # when brain is run from a source checkout rather than installed
    root = os.path.dirname(os.path.dirname(os.path.abspath(engines.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class Child:
    """A helper process whose stdout lines are collected by a thread."""

    def __init__(self, mode: str, target: EngineTarget, slot: str) -> None:
        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engines.conformance.child", mode, target.to_json(), slot],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"child-{mode}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.endswith(b"\n"):  # a line cut short by the kill was never acknowledged
                self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace").strip()
        return err.splitlines()[-1] if err else "(no stderr)"

    def line(self, timeout: float) -> str:
        """The next stdout line; fails the check if the child died or stalled."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise CheckFailed(f"{self.mode} child printed nothing for {timeout:.0f}s") from None
        if line is None:
            self.proc.wait()
            raise CheckFailed(f"{self.mode} child exited with {self.proc.returncode}: {self._stderr_tail()}")
        return line

    def kill(self) -> list[str]:
        """SIGKILL the child; return the lines it printed before dying."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(10)
        rest: list[str] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                rest.append(line)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return rest


def stream_then_kill(
    mode: str,
    target: EngineTarget,
    slot: str,
    *,
    min_acks: int,
    max_seconds: float,
    jitter: float,
    rng_seed: int,
) -> list[int]:
    """Run a writer child until it acknowledged min_acks batches (or
    max_seconds passed with at least one), SIGKILL it after a random extra
    delay of up to jitter seconds, and return every acknowledged batch id."""

    child = Child(mode, target, slot)
    acked: list[int] = []
    try:
        ready = child.line(timeout=60)
        if ready != "ready":
            raise CheckFailed(f"{mode} child said {ready!r} instead of 'ready'")
        deadline = time.monotonic() + max_seconds
        while len(acked) < min_acks and (time.monotonic() < deadline or not acked):
            acked.append(int(child.line(timeout=30)))
        time.sleep(random.Random(rng_seed).uniform(0, jitter))
    finally:
        rest = child.kill()
    acked.extend(int(x) for x in rest if x.isdigit())
    if child.proc.returncode != -signal.SIGKILL:
        raise CheckFailed(f"{mode} child was not killed by SIGKILL (exit status {child.proc.returncode})")
    return acked


def run_once(mode: str, target: EngineTarget, slot: str, timeout: float = 60) -> str:
    """Run a child that prints one line and exits; return that line."""
    child = Child(mode, target, slot)
    try:
        return child.line(timeout=timeout)
    finally:
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass  # killed below
        child.kill()
