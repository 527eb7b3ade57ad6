"""The TiKV flags of `brain serve` and `brain engine-check`, and the per-check
key prefixes of engine-check on TiKV (run over the test double in-process).
The unreachable-PD cases use the real tikv-client against a closed port."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
from tikv_double import FakeTikv

from engines.conformance import CHECKS
from engines.tikv.checking import delete_prefix, run_tikv_checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _brain(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "brain", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_tikv_flags_are_checked():
    proc = _brain("serve", "--engine", "tikv")
    assert proc.returncode == 2 and "--engine tikv needs the PD endpoints" in proc.stderr
    proc = _brain("serve", "--engine", "memory", "--tikv-pd-endpoints", "pd:2379")
    assert proc.returncode == 2 and "only applies to --engine tikv" in proc.stderr
    proc = _brain("serve", "--engine", "leveldb", "--tikv-key-prefix", "x/")
    assert proc.returncode == 2 and "only applies to --engine tikv" in proc.stderr


def test_serve_says_plainly_when_pd_does_not_answer(tmp_path):
    pytest.importorskip("tikv_client")
    endpoint = f"127.0.0.1:{_closed_port()}"
    proc = _brain("serve", "--engine", "tikv", "--tikv-pd-endpoints", endpoint, "--tikv-key-prefix", "c1/",
                  "--listen-client-urls", "http://127.0.0.1:0", "--data-dir", str(tmp_path / "unused"))
    assert proc.returncode == 1, proc.stderr
    last = json.loads(proc.stderr.strip().splitlines()[-1])  # serve ends with one fatal log line
    assert last["level"] == "fatal", proc.stderr
    assert last["msg"] == f"cannot reach TiKV through PD {endpoint}: PD cluster failed to respond", proc.stderr
    assert "Traceback" not in proc.stderr


def test_engine_check_tikv_reports_an_unreachable_pd():
    pytest.importorskip("tikv_client")
    endpoint = f"127.0.0.1:{_closed_port()}"
    proc = _brain("engine-check", "--engine", "tikv", "--tikv-pd-endpoints", endpoint, "--tikv-key-prefix", "x/")
    assert proc.returncode == 1
    assert f"FAIL open: unexpected EngineUnavailableError: cannot reach TiKV through PD {endpoint}" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "engine-check tikv: 0 passed, 1 failed"
    proc = _brain("engine-check", "--engine", "memory", "--tikv-key-prefix", "x/")
    assert proc.returncode == 2 and "--tikv-key-prefix only applies to --engine tikv" in proc.stderr


IN_PROCESS = [c for c in CHECKS if c.name not in ("kill-atomicity", "kill-durability")]


@pytest.mark.parametrize("keep", [False, True])
def test_engine_check_runs_each_check_under_its_own_prefix(keep):
    cluster = FakeTikv()
    options = {"pd_endpoints": "double:2379", "key_prefix": "team/", "connector": cluster.connect, "page_size": 4}
    lines: list[str] = []
    summary = run_tikv_checks(options, IN_PROCESS, emit=lines.append, keep=keep)
    assert summary.ok, "\n".join(lines)
    # skipped: locked-data-dir (no data directory), and the 6 features tikv does not declare
    assert lines[-1] == f"engine-check tikv: {len(IN_PROCESS) - 7} passed, 0 failed, 7 skipped"
    stored = [k for k, _ in asyncio.run(cluster.raw())]
    if keep:
        assert any("check data kept in TiKV under key prefix 'team/engine-check/" in line for line in lines)
        prefixes = {k.split(b"/")[3] for k in stored}
        assert all(k.startswith(b"team/engine-check/") for k in stored)
        assert {b"open", b"ordering", b"commit-if"} <= prefixes  # one prefix per check
        run_id = stored[0].split(b"/")[2]
        assert asyncio.run(delete_prefix(options, b"team/engine-check/" + run_id + b"/")) == len(stored)
        assert asyncio.run(cluster.raw()) == []
    else:
        assert stored == []  # the run removed its keys
