"""What an engine declares it can do beyond the contract in engines/base.py.

Every engine has a `features` attribute, an `EngineFeatures`. brain reads
the declaration, never the presence of an attribute: an engine that declares
a feature implements the small protocol that goes with it (below), and the
conformance suite (`brain engine-check`) checks that it does. The accessors
at the end hand a caller the typed object, or None when the feature is not
declared.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Protocol, cast

from engines.timings import DurationHistogram


@dataclass(frozen=True, slots=True)
class EngineFeatures:
    """Declared capabilities; an engine declares none of them by default.

    shared: several brain processes may open the same data, at once or one
        after another (TiKV). The MVCC writer then makes every commit
        conditional on its revision key, and `brain serve` runs as one
        member of a cluster on the engine (brain/cluster), not alone.
    ordered_writes: writes and conditional commits take effect in the order
        they were called, even while earlier ones are still being synced,
        and `commit_snapshot()` (engines.base.OrderedWrites) commits a batch and hands
        back a snapshot of exactly what that commit left. The MVCC writer
        then hands the engine its next batch without waiting for the last
        one to return (two commits in flight, not one), and publishes each
        batch with its own snapshot: one taken once the call returned could
        already hold the next batch.
    inline_sync_hint: `syncs_inline()` (InlineSyncHint) tells whether a
        synced write made now runs on the caller's thread and returns once
        durable, without suspending. The writer then commits such a batch
        itself instead of in a task a turn of the event loop later.
    disk_size: `disk_size()` and `bytes_written` (SizedEngine). The space
        quota, Status' dbSize, the snapshot's size estimate and the
        etcd_mvcc_db_total_size_in_bytes gauge use them; without it they
        read 0 and the quota never refuses a write.
    compact_range: `compact_range()` (CompactingEngine) reclaims space;
        Maintenance.Defragment calls it, and is a no-op without it.
    latency_histograms: `fsync_durations` and `commit_durations`
        (TimedEngine), exported as etcd_disk_wal_fsync_duration_seconds and
        etcd_disk_backend_commit_duration_seconds; without it the two
        histograms are exported empty.
    sync_counters: `sync_seconds`, `synced_inline` and `synced_on_thread`
        (SyncCountingEngine), exported as brain_engine_sync_seconds_average
        and brain_engine_synced_writes; without it those are not exported.
    """

    shared: bool = False
    ordered_writes: bool = False
    inline_sync_hint: bool = False
    disk_size: bool = False
    compact_range: bool = False
    latency_histograms: bool = False
    sync_counters: bool = False

    def declared(self) -> list[str]:
        """The names of the declared features, for messages."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


class DeclaresFeatures(Protocol):
    @property
    def features(self) -> EngineFeatures: ...


class InlineSyncHint(Protocol):
    def syncs_inline(self) -> bool:
        """Whether a synced write of ordinary size made now would run on the
        caller's thread (returning once durable, without suspending the
        caller). An engine may still take a very large write off the
        caller's thread."""
        ...


class SizedEngine(Protocol):
    """An engine that can tell its size on disk."""

    # bytes of the writes made since it opened: about what its size grew by
    # since, which keeps a size measured now and then current
    bytes_written: int

    def disk_size(self) -> int:
        """Bytes the engine's data takes on disk now."""
        ...


class CompactingEngine(Protocol):
    async def compact_range(self) -> None:
        """Compact the whole database (etcd's Defragment); the data is unchanged."""
        ...


class TimedEngine(Protocol):
    # the syncs that make commits durable, and whole commits
    fsync_durations: DurationHistogram
    commit_durations: DurationHistogram


class SyncCountingEngine(Protocol):
    sync_seconds: float  # moving average of synced writes' duration
    synced_inline: int  # synced writes made on the caller's thread
    synced_on_thread: int  # synced writes made on the engine's own thread


# the accessors: the cast is sound because the conformance suite checks
# every declared feature against what the engine does


def inline_sync_hint(engine: DeclaresFeatures) -> Callable[[], bool] | None:
    return cast(InlineSyncHint, engine).syncs_inline if engine.features.inline_sync_hint else None


def sized(engine: DeclaresFeatures) -> SizedEngine | None:
    return cast(SizedEngine, engine) if engine.features.disk_size else None


def compacting(engine: DeclaresFeatures) -> CompactingEngine | None:
    return cast(CompactingEngine, engine) if engine.features.compact_range else None


def timed(engine: DeclaresFeatures) -> TimedEngine | None:
    return cast(TimedEngine, engine) if engine.features.latency_histograms else None


def sync_counting(engine: DeclaresFeatures) -> SyncCountingEngine | None:
    return cast(SyncCountingEngine, engine) if engine.features.sync_counters else None
