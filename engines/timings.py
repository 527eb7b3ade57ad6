"""Durations counted into fixed buckets with plain arithmetic.

An engine's commit path records its fsync and commit durations here; the
metrics collector turns them into Prometheus histograms when scraped. No
lock: each histogram has one writer at a time (the engine's write lock), and
a scrape that reads a count one write behind is harmless.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# etcd's buckets for etcd_disk_wal_fsync_duration_seconds and
# etcd_disk_backend_commit_duration_seconds: 1 ms doubling 14 times, so
# dashboards' quantiles over brain and etcd read alike
DISK_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(14))


@dataclass(slots=True)
class DurationHistogram:
    bounds: tuple[float, ...] = DISK_BUCKETS
    # per bucket, not cumulative; the last is +Inf
    counts: list[int] = field(default_factory=list)
    total_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # le: the bound is inclusive
        self.total_seconds += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)
