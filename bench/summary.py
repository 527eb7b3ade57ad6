"""Rounds to one figure per server (the median: one slow round, e.g. from a
background fsync storm, does not move it) and brain/etcd ratios."""
from __future__ import annotations

import statistics
from typing import Any

# figures that are medianed and compared (the rest of a record is per round)
METRICS = (
    "ops_per_s", "p50_ms", "p99_ms", "max_ms", "drain_ms", "pages_per_s", "puts_per_s",
    "server_cpu_pct", "server_rss_mb", "client_cpu_pct", "client_busiest_pct", "client_machine_pct",
)


def median_record(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "failed" not in r]
    out: dict[str, Any] = {"rounds": len(runs), "rounds_ok": len(ok)}
    for m in METRICS:
        values = [r[m] for r in ok if r.get(m) is not None]
        if values:
            out[m] = statistics.median(values)
    out["errors"] = sum(r.get("errors") or 0 for r in ok)
    if any("complete" in r for r in ok):
        out["complete"] = all(r.get("complete") for r in ok)
    return out


def latency_metric(medians: dict[str, dict[str, Any]]) -> str | None:
    """The latency figure to compare: p99 where every server has it, else
    the watch drain time (the Go generator times no single event)."""
    for m in ("p99_ms", "drain_ms"):
        if medians and all(med.get(m) is not None for med in medians.values()):
            return m
    return None


def ratios(brain: dict[str, Any], etcd: dict[str, Any]) -> dict[str, float]:
    """brain / etcd for every figure both have: above 1 is more for brain
    (better for rates, worse for latencies, CPU and memory)."""
    out: dict[str, float] = {}
    for m in METRICS:
        b, e = brain.get(m), etcd.get(m)
        if b is not None and e:
            out[m] = b / e
    return out
