"""The fake PD + TiKV as a subprocess of the tests, and pytest fixtures.

tikv-client lives in a Rust runtime that a test cannot reach into, so the
fake runs as a process of its own (python -m tests.tikv_fake), as a real
cluster would, and can be stopped, SIGKILLed and restarted on its data file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fake_unavailable() -> str | None:
    """Why the fake cannot run here, or None: it keeps its data with
    Python's sqlite3 module, which a Python built without SQLite lacks."""
    try:
        import sqlite3  # noqa: F401
    except ImportError as e:
        return f"the fake TiKV needs Python's sqlite3 module: {e}"
    return None


def tikv_client_missing() -> str | None:
    """Why the real tikv-client (or the fake) cannot be used here, or None."""
    try:
        import tikv_client  # noqa: F401
    except ImportError as e:
        return (f"tikv-client is not installed ({e}); it is in the 'test' extra, "
                "with wheels for x86_64 Linux only")
    return fake_unavailable()


@dataclass
class FakeTikvProcess:
    """One fake cluster: its data file persists across stop/start; the
    ports chosen on the first start are kept, so clients and brain servers
    configured with pd_endpoint reach the restarted fake."""

    data: Path
    log_path: Path
    pd_port: int = 0
    tikv_port: int = 0
    stall_commit: tuple[str, ...] = ()
    advertise_caller_host: bool = False
    die_on_commit_of: str = ""
    proc: subprocess.Popen | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pd_endpoint(self) -> str:
        return f"127.0.0.1:{self.pd_port}"

    @property
    def tikv_endpoint(self) -> str:
        return f"127.0.0.1:{self.tikv_port}"

    def start(self) -> FakeTikvProcess:
        self._log = open(self.log_path, "ab")
        argv = [sys.executable, "-m", "tests.tikv_fake", "--pd-port", str(self.pd_port),
                "--tikv-port", str(self.tikv_port), "--data", str(self.data), "--log-rpcs", "--exit-with-parent"]
        for key in self.stall_commit:
            argv += ["--stall-commit", key]
        if self.advertise_caller_host:
            argv.append("--advertise-caller-host")
        if self.die_on_commit_of:
            argv += ["--die-on-commit-of", self.die_on_commit_of]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
        line = self._ready_line()
        # "ready pd=127.0.0.1:P tikv=127.0.0.1:T"
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.pd_port = int(fields["pd"].rsplit(":", 1)[1])
        self.tikv_port = int(fields["tikv"].rsplit(":", 1)[1])
        return self

    def _ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        # the fake prints its ready line once both ports serve, or exits
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ready "):
            self.proc.wait(5)
            raise RuntimeError(f"the fake TiKV did not start (exit {self.proc.returncode}):\n{self.log_tail()}")
        return line

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc = None
        if self._log is not None:
            self._log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> FakeTikvProcess:
        self.stop(sig)
        return self.start()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def rpc_counts(self) -> Counter[str]:
        """How often each RPC was served (from the fake's --log-rpcs log)."""
        counts: Counter[str] = Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if " rpc " in line:
                counts[line.rsplit(" rpc ", 1)[1].strip()] += 1
        return counts


def start_fake(directory: Path, name: str = "fake-tikv", stall_commit: tuple[str, ...] = ()) -> FakeTikvProcess:
    directory.mkdir(parents=True, exist_ok=True)
    return FakeTikvProcess(directory / f"{name}.sqlite", directory / f"{name}.log", stall_commit=stall_commit).start()


ENDPOINTS_ENV = "BRAIN_TEST_TIKV_PD_ENDPOINTS"


@pytest.fixture
def fake_tikv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTikvProcess]:
    """A fresh fake cluster for one test, its PD endpoint also in
    $BRAIN_TEST_TIKV_PD_ENDPOINTS (skips where tikv-client is missing)."""
    if (why := tikv_client_missing()) is not None:
        pytest.skip(why)
    fake = start_fake(tmp_path / "fake-tikv")
    monkeypatch.setenv(ENDPOINTS_ENV, fake.pd_endpoint)
    yield fake
    fake.stop()
