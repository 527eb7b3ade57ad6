"""The MVCC layer as the rest of brain sees it: etcd's ReadView, TxnRead,
TxnWrite and KV (server/storage/mvcc/kv.go) as Protocols, with the revision
rules every implementation keeps. Outside brain/mvcc, code names these, not
the classes that implement them (view.py, txn_read.py, txn_write.py,
store.py); only the server's start opens the concrete store.

Revisions, as in etcd:
  - The store's revision starts at 1 (a fresh store) and counts committed
    writes: every write request that changes something takes the next
    revision, once; a request that changes nothing (a failed compare, a
    delete that finds no key) takes none. So revisions have no gaps.
  - A read at revision 0 reads the current revision. A read above the
    current revision fails with ErrFutureRev; a read below the compact
    revision fails with ErrCompacted (the compact revision itself can still
    be read).
  - A range's count is the number of keys live in the range at the revision
    read, whatever its limit; its kvs are at most limit of them (limit <= 0:
    no limit), in key order.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence

from engines.base import Engine, Snapshot

# A range end of None selects the single key; b"" selects every key >= key
# (etcd's "\0" range end); anything else is the exclusive upper bound.
RangeEnd = bytes | None


@dataclass(slots=True)
class RawRange:
    """Serialized KeyValues in key order, and the exact total in the range."""

    kvs: list[bytes]
    count: int


@dataclass(slots=True)
class Change:
    """One key changed at one revision. kv is the serialized new version
    (for a delete: the tombstone {key, mod_revision}); prev is the serialized
    version it replaced, if the key was live, written at prev_rev."""

    rev: int
    key: bytes
    kv: bytes
    prev: bytes | None
    deleted: bool
    lease: int = 0
    prev_lease: int = 0
    prev_rev: int = 0
    # prev's copy into its history record was written ahead of the batch
    # (brain/mvcc/copy_ahead.py)
    copied: bool = False


# Called after each durable commit, on the event loop, with the commit's
# changes in order and the revision the store is at after it.
CommitListener = Callable[[Sequence[Change], int], None]


class View(Protocol):
    """etcd's ReadView: the store at one committed revision. A view never
    changes: writes committed after it was taken are not in it, whatever
    the reader asks, so a response header can carry the view's revision."""

    @property
    def rev(self) -> int:
        """The revision this view is at (a committed one)."""
        ...

    @property
    def compact_rev(self) -> int:
        """Reads below this revision fail with ErrCompacted (0: none)."""
        ...

    @property
    def snapshot(self) -> Snapshot:
        """The engine snapshot the view reads, for readers of the engine's
        revision log (watch replay) and of the lease records."""
        ...

    def check_rev(self, rev: int) -> int:
        """The revision a read asking for rev reads (0: this view's), or
        ErrFutureRev / ErrCompacted by the rules above."""
        ...

    async def range(
        self, key: bytes, end: RangeEnd, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RawRange:
        """The keys in [key, end) live at rev (0: this view's revision)."""
        ...


class TxnRead(Protocol):
    """etcd's TxnRead: every read of the txn is at one revision, rev(),
    which is also the revision its response header reports. A read-only
    txn is one of these: it has nothing to write with."""

    def rev(self) -> int:
        """The revision the txn reads at."""
        ...

    @property
    def compact_rev(self) -> int:
        """Reads below this revision fail with ErrCompacted."""
        ...

    async def get(self, key: bytes) -> bytes | None:
        """The serialized KeyValue of key live at rev() (None: not live)."""
        ...

    async def range(
        self, key: bytes, end: RangeEnd, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RawRange:
        """The keys in [key, end) live at rev (0: rev())."""
        ...


class TxnWrite(TxnRead, Protocol):
    """etcd's TxnWrite: one write request, applied by the store's writer.
    It starts at the store's latest revision R (its reads see R and, after
    its first write, its own writes); every write it makes is at R + 1, so
    rev() is R until it writes and R + 1 after. A txn that writes nothing
    takes no revision."""

    @property
    def begin_rev(self) -> int:
        """R: the store's revision when the txn started."""
        ...

    def lease_exists(self, lease_id: int) -> bool:
        """Whether a Put may name the lease (ErrLeaseNotFound otherwise)."""
        ...

    async def put(
        self, key: bytes, value: bytes, lease: int, known: tuple[bytes | None, Any] | None = None
    ) -> int:
        """Write key at R + 1; returns R + 1. known: what get(key) returns
        now, and its parsed KeyValue if made, when the caller just read it."""
        ...

    async def delete_range(self, key: bytes, end: RangeEnd) -> tuple[int, int]:
        """Delete the keys in [key, end) live now: (how many, rev() after)."""
        ...

    def delete_live(self, raw: bytes, kv: Any) -> int:
        """Delete one key that get() has just returned live: raw as it
        returned it, kv its parsed KeyValue. Returns R + 1. For a caller that
        reads each key before deciding (a revoke checks each key's lease),
        so the key is not read a second time."""
        ...

    def take(self, changes: list[Change]) -> None:
        """Another store's changes at R + 1, each as that store made it (a
        migration's import, brain/migrate); prev of each change must be
        what get() returns for its key."""
        ...

    def uncommitted_changes(self) -> Sequence[Change]:
        """Changes of earlier requests that the engine does not hold yet
        (the same group commit's, and those of a commit still in flight):
        in the txn's reads, but not yet seen by commit listeners."""
        ...


WriteFn = Callable[[TxnWrite], Awaitable[Any]]


class WriteFence(Protocol):
    """Who may commit, when several brain processes share one engine and
    only an elected leader writes (brain/cluster). Every commit carries the
    fence's expectations, so a writer that lost its leadership cannot
    commit, however late its commit reaches the engine."""

    def admits_writes(self) -> bool:
        """Whether this process may commit now (it holds an unexpired lease)."""
        ...

    def expectations(self) -> list[tuple[bytes, bytes | None]]:
        """Engine keys and the values they must still hold for a commit to apply."""
        ...


class KV(Protocol):
    """etcd's KV: the store as the services see it. Reads never wait for
    writes: they use the latest committed view. Writes are queued to one
    writer, which applies them in arrival order and commits them in groups;
    a write's result is returned once its commit is durable, and commit
    listeners have been told of its changes before."""

    # the engine the store commits to, and whether its commits sync: records
    # beside the store (leases, alarms) are written with the same durability
    engine: Engine
    sync: bool
    # whether a Put may name a lease: set by whoever holds the leases
    lease_exists: Callable[[int], bool]

    @property
    def view(self) -> View:
        """The latest committed view."""
        ...

    @property
    def rev(self) -> int:
        """The latest committed revision."""
        ...

    @property
    def compact_rev(self) -> int:
        """The latest compact revision (logical: reads below it fail)."""
        ...

    def read_txn(self) -> TxnRead:
        """A read-only txn at the latest committed view: never queued
        behind writes, as etcd answers read-only txns."""
        ...

    async def write(self, fn: WriteFn, *, imported: bool = False) -> Any:
        """fn applied to a TxnWrite by the writer; its result once durable.
        If fn raises, the request fails alone and none of its writes stay.
        imported: a migration's revision, taken while other writes are
        refused (Store.writes_refused)."""
        ...

    async def compact(self, rev: int, physical: bool) -> int:
        """etcd's Compact: reads below rev fail from now on (ErrCompacted
        if rev is not above the compact revision, ErrFutureRev if above the
        current one). Returns the store revision when it was applied;
        physical: also waits until history below rev is pruned."""
        ...

    def add_listener(self, fn: CommitListener) -> None: ...

    def remove_listener(self, fn: CommitListener) -> None: ...

    def writer_running(self) -> bool:
        """Whether the writer takes writes (etcd's /health)."""
        ...

    async def close(self) -> None:
        """Finish queued writes; the engine stays open."""
        ...


class FollowingKV(KV, Protocol):
    """The store of a member of a cluster over a shared engine
    (brain/cluster): only the fence's holder commits; the others publish
    what it committed as they read it back from the engine."""

    fence: WriteFence | None
    # on a commit refused because another process wrote: catch up with it
    resync: Callable[[], Awaitable[object]] | None
    # held around every commit carrying the fence's expectations (the
    # store's batches, its compact revision, the lessor's lease records):
    # each locks the fence's term key in a transaction of its own, and TiKV
    # refuses the later of two run side by side as a write conflict
    fence_lock: asyncio.Lock

    def follow(
        self, changes: list[Change], rev: int, snapshot: Snapshot, compact_rev: int, snapshot_rev: int = 0
    ) -> None:
        """Publish revisions another process committed, up to rev at snapshot.
        snapshot_rev: the revision snapshot holds when it is past rev (a
        long catch-up publishes one snapshot in chunks); reads of such a
        view go to the keys' history at rev, never to the snapshot's live
        keys."""
        ...


class CompactionFigures(Protocol):
    finished: int  # highest revision physically compacted
    runs: int
    removed_versions: int


class KeyIndexFigures(Protocol):
    @property
    def log_size(self) -> int: ...

    @property
    def past_changes(self) -> int: ...

    @property
    def past_hits(self) -> int: ...

    @property
    def estimated_bytes(self) -> int: ...


class Store(FollowingKV, Protocol):
    """The store as the server holds it: KV, the cluster's part, a
    migration's part, and the figures its metrics report."""

    # set while the store is a migration's target (brain/migrate): every
    # write but an imported one, and every compaction, fails with it
    writes_refused: Callable[[], Exception] | None

    async def adopt_engine_state(self) -> None:
        """Serve what a migration wrote to the engine beside the writer."""
        ...

    @property
    def compactor(self) -> CompactionFigures: ...

    @property
    def index(self) -> KeyIndexFigures: ...

    batches: int  # engine commits made by the writer
    batched_requests: int  # write requests in them
    # etcd's raft proposals (see MVCCStore)
    proposals_submitted: int
    proposals_committed: int
    proposals_failed: int

    @property
    def keys_total(self) -> int:
        """Keys live at the current revision."""
        ...
