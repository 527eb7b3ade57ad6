"""The Go load generator (etcdload, built on etcd's clientv3): found through
$ETCDLOAD_BIN or at /tmp/etcdload/etcdload, run for the workloads it has in
the same shape, and its one JSON line turned into a run record. A Go client
does not run out of CPU before the server does, as a Python client may."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.settings import Settings

DEFAULT_PATH = "/tmp/etcdload/etcdload"
# the generator refuses longer runs
MAX_DURATION_S = 20.0
# its own setup (connecting, warming up) beyond -d
_SETUP_ALLOWANCE_S = 120.0


def find(explicit: str | None = None) -> str | None:
    for path in (explicit, os.environ.get("ETCDLOAD_BIN"), DEFAULT_PATH):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def argv(binary: str, workload: str, target: str, settings: Settings, server_pid: int | None) -> list[str]:
    d = f"{min(settings.duration, MAX_DURATION_S):g}s"
    # clientv3 multiplexes many requests on one connection well; as many
    # connections as the Python client opens keeps the two comparable
    conns = str(max(1, settings.client_procs * settings.channels))
    args = [binary, "-target", target, "-d", d, "-conns", conns]
    if workload == "range_one":
        args += ["-w", "range_one", "-conc", str(settings.inflight)]
    elif workload == "watch":
        args += [
            "-w", "watch",
            "-watchers", str(settings.watchers),
            "-streams", str(settings.watch_streams),
            "-nputs", str(settings.watch_puts),
            "-putconc", str(settings.watch_put_inflight),
        ]
    else:
        raise ValueError(f"etcdload does not drive {workload!r} here")
    if server_pid:
        args += ["-server-pid", str(server_pid)]
    return args


def run(args: list[str], settings: Settings, tick: Callable[[float], None]) -> dict[str, Any]:
    """Run the generator, calling tick(seconds since start) about five times a
    second; returns the record in the Python client's terms."""
    t0 = time.monotonic()
    limit = min(settings.duration, MAX_DURATION_S) * 2 + _SETUP_ALLOWANCE_S
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > limit:
                raise RuntimeError(f"etcdload ran over {limit:.0f} s")
            tick(time.monotonic() - t0)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"etcdload exited {proc.returncode}: {(err or out).strip()[-1500:]}")
    return normalize(json.loads(lines[-1]))


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    cpu = raw.get("client_cpu_pct")
    out: dict[str, Any] = {
        "client": "etcdload",
        "client_version": raw.get("client"),
        "client_procs": 1,
        "client_cpu_pct": cpu,
        # one Go process uses every core it needs: its total is its busiest
        "client_busiest_pct": cpu,
        "client_machine_pct": cpu / cores if cpu is not None else None,
        "server_cpu_pct_etcdload": raw.get("server_cpu_pct"),
        "wall_s": raw.get("wall_s"),
        "raw": raw,
    }
    if raw.get("workload") == "watch":
        wall, put_phase = raw.get("wall_s") or 0.0, raw.get("put_phase_s") or 0.0
        out.update({
            "ops": raw.get("events"),
            "ops_per_s": raw.get("events_per_s"),
            "events_expected": raw.get("expected"),
            "complete": not raw.get("timed_out") and raw.get("events") == raw.get("expected"),
            "watchers": raw.get("watchers"),
            "streams": raw.get("streams"),
            "puts": raw.get("nputs"),
            "puts_per_s": raw.get("puts_per_s"),
            "drain_ms": max(0.0, 1e3 * (wall - put_phase)),
            # the generator does not time single events
            "p50_ms": None, "p99_ms": None, "max_ms": None,
            "errors": 0,
        })
    else:
        out.update({
            "ops": raw.get("n"),
            "ops_per_s": raw.get("ops_per_s"),
            "p50_ms": raw.get("p50_ms"),
            "p99_ms": raw.get("p99_ms"),
            "max_ms": raw.get("max_ms"),
            "errors": raw.get("errors", 0),
        })
    return out
