"""The engine conformance suite over every engine, one test per check, and
the engine-check / engine-bench commands end to end."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from engines.conformance import CHECKS, EngineTarget, run_check
from engines.conformance.runner import FAIL, SKIP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINES = ("leveldb", "memory")
# checks skipped: leveldb is not shared; memory is not durable (4 checks)
# and declares only ordered_writes of the 7 features
SKIPPED = {"leveldb": 1, "memory": 10}
# LevelDB syncs inline while syncs are fast and on its write thread when
# they are slow, through brain's write-ahead log or (optionally) its own log:
# the suite runs on each way; small log segments make it switch segments
TARGETS = {
    "leveldb": ("leveldb", {}),
    "leveldb-thread": ("leveldb", {"inline_sync_max": 0.0, "wal_segment_size": 64 << 10}),
    "leveldb-own-log": ("leveldb", {"write_ahead_log": False}),
    "memory": ("memory", {}),
}


def _target(engine: str, tmp_path, options: dict | None = None) -> EngineTarget:
    return EngineTarget(engine, options or {}, base_dir=str(tmp_path) if engine == "leveldb" else None)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
@pytest.mark.parametrize("target", TARGETS)
def test_check(target, check, tmp_path):
    engine, options = TARGETS[target]
    result = run_check(_target(engine, tmp_path, options), check)
    if result.status == SKIP:
        pytest.skip(result.detail)
    assert result.status != FAIL, result.line()


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run(
        [sys.executable, "-m", "brain.engine_commands", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_check_command(engine, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious").write_text("untouched")
    proc = _run("engine-check", "--engine", engine, "--data-dir", str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    skipped = SKIPPED[engine]
    assert lines[-1] == f"engine-check {engine}: {len(CHECKS) - skipped} passed, 0 failed, {skipped} skipped", lines[-1]
    assert all(re.match(r"(PASS|SKIP) \S+", line) for line in lines if not line.startswith(("note:", "engine-check"))), proc.stdout
    # the checks work in a scratch directory that is removed afterwards
    assert sorted(os.listdir(data)) == ["precious"]


def test_engine_check_reports_failure():
    proc = _run("engine-check", "--engine", "tikv")
    assert proc.returncode == 1
    assert "FAIL open" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "engine-check tikv: 0 passed, 1 failed"


def test_engine_check_needs_data_dir_for_leveldb():
    proc = _run("engine-check", "--engine", "leveldb")
    assert proc.returncode == 2
    assert "--data-dir" in proc.stderr


def test_engine_check_subset_and_list(tmp_path):
    proc = _run("engine-check", "--list")
    assert proc.returncode == 0 and all(c.name in proc.stdout for c in CHECKS)
    proc = _run("engine-check", "--engine", "memory", "--check", "ordering", "--check", "commit-if")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "engine-check memory: 2 passed, 0 failed"
    proc = _run("engine-check", "--engine", "memory", "--check", "nope")
    assert proc.returncode == 2 and "unknown checks: nope" in proc.stderr


def test_engine_bench_command(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("engine-bench", "--engine", "leveldb", "--data-dir", str(tmp_path), "--out", str(out),
                "--seconds", "0.05", "--rounds", "1", "--value-size", "100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "engine/raw plyvel durable batch throughput at batch sizes 1/10/100" in proc.stdout
    doc = json.loads(out.read_text())
    for name in ("durable_single", "durable_batch_1", "durable_batch_10", "durable_batch_100",
                 "unsynced_single", "point_get", "scan_10k"):
        assert doc["results"][name]["ops_per_s"] > 0, name
    assert set(doc["raw_plyvel"]) == {"durable_batch_1", "durable_batch_10", "durable_batch_100"}
    assert set(doc["ratio_engine_to_raw"]) == {"1", "10", "100"}
    assert sorted(os.listdir(tmp_path)) == ["bench.json"]  # scratch data removed
