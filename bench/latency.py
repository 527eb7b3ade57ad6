"""Latency summaries: nearest-rank percentiles over every sample (no
histograms, so p99 and max are exact for the run)."""
from __future__ import annotations

from collections.abc import Sequence


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (not empty)."""
    i = round(p / 100.0 * (len(ordered) - 1))
    return ordered[min(max(i, 0), len(ordered) - 1)]


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max in milliseconds of samples given in seconds."""
    if not samples_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples_s)
    return {
        "p50_ms": 1e3 * percentile(ordered, 50),
        "p99_ms": 1e3 * percentile(ordered, 99),
        "max_ms": 1e3 * ordered[-1],
    }
