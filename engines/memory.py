"""The in-memory engine: NOT durable. Everything is lost when the process exits.

It is meant for tests and development (`brain serve --engine memory`).

Snapshot isolation without copying: each committed batch gets the next
sequence number, every key keeps a short list of (sequence, value | None)
versions, and a snapshot is just the sequence number it was taken at; it
sees, per key, the newest version at or below that number. Taking a snapshot
is O(1), which matters because the MVCC layer takes one per commit batch.

Old versions are pruned once no open snapshot can see them. The MVCC layer
does not close the snapshots it replaces (it drops them), so a snapshot
reports its release from close() or from __del__ by appending its sequence to
a deque (an atomic append: no lock inside a finalizer, which may run in any
thread at any time); the next write folds the releases in and prunes.
"""
from __future__ import annotations

import logging
from bisect import bisect_right
from collections import OrderedDict, deque
from operator import itemgetter
from threading import Lock
from typing import Sequence

from sortedcontainers import SortedList

from engines.base import ConflictError, EngineClosedError, EngineFeatures, WriteBatch, check_key
from engines.validate import Op, check_batch, check_expect, check_keys, check_scan

log = logging.getLogger(__name__)

Version = tuple[int, bytes | None]  # (sequence, value); None is a deletion
_seq_of = itemgetter(0)


def _visible(versions: list[Version], seq: int) -> bytes | None:
    """The value a reader at sequence seq sees."""
    last = versions[-1]
    if last[0] <= seq:  # the common case: the newest version
        return last[1]
    i = bisect_right(versions, seq, key=_seq_of)
    return versions[i - 1][1] if i else None


class MemorySnapshot:
    """A read view of a MemoryEngine at one sequence number."""

    __slots__ = ("_engine", "_seq", "_open")

    def __init__(self, engine: MemoryEngine, seq: int) -> None:
        self._engine = engine
        self._seq = seq
        self._open = True

    def _check(self) -> MemoryEngine:
        if not self._open:
            raise EngineClosedError("memory snapshot used after close()")
        return self._engine

    async def get(self, key: bytes) -> bytes | None:
        key = check_key(key)
        return self._check()._get(key, self._seq)

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        ks = check_keys(keys)
        return self._check()._batch_get(ks, self._seq)

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        s, e, n = check_scan(start, end, limit)
        return self._check()._scan(s, e, n, reverse, keys_only, self._seq)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._engine._released.append(self._seq)

    def __del__(self) -> None:
        # getattr: __init__ may not have run to the end
        if getattr(self, "_open", False):
            self._open = False
            self._engine._released.append(self._seq)


class MemoryEngine:
    """An in-memory, non-durable engine with snapshot isolation.

    durable is False: writes return as soon as they are applied in memory,
    `sync` is ignored, and nothing survives the process.
    """

    name = "memory"
    durable = False
    features = EngineFeatures(ordered_writes=True)  # applied under a lock when called

    def __init__(self) -> None:
        log.warning("memory engine: data is NOT durable and is lost when the process exits")
        # one lock for everything: callers may be several threads (each with
        # its own event loop), and sortedcontainers is not thread-safe
        self._lock = Lock()
        self._closed = False
        self._seq = 0  # sequence of the last committed batch
        self._keys: SortedList = SortedList()  # every key with a stored version
        self._versions: dict[bytes, list[Version]] = {}
        # open snapshots: sequence -> how many; insertion order is ascending
        # (a new snapshot's sequence is never below an older one's), so the
        # first entry is the oldest sequence anyone can still read at
        self._live: OrderedDict[int, int] = OrderedDict()
        self._released: deque[int] = deque()
        # (sequence, key) of writes that left versions behind a newer one or
        # a deletion marker: candidates for pruning, in sequence order
        self._garbage: deque[tuple[int, bytes]] = deque()

    def __repr__(self) -> str:
        return f"MemoryEngine({len(self._versions)} keys{', closed' if self._closed else ''})"

    def _check(self) -> None:
        if self._closed:
            raise EngineClosedError("memory engine used after close()")

    # reads; seq None: the latest committed state

    def _get(self, key: bytes, seq: int | None) -> bytes | None:
        with self._lock:
            self._check()
            versions = self._versions.get(key)
            if versions is None:
                return None
            return versions[-1][1] if seq is None else _visible(versions, seq)

    def _batch_get(self, keys: list[bytes], seq: int | None) -> list[bytes | None]:
        with self._lock:
            self._check()
            at = self._seq if seq is None else seq
            out: list[bytes | None] = []
            for key in keys:
                versions = self._versions.get(key)
                out.append(None if versions is None else _visible(versions, at))
            return out

    def _scan(self, start: bytes, end: bytes | None, limit: int, reverse: bool, keys_only: bool, seq: int | None) -> list[tuple[bytes, bytes]]:
        with self._lock:
            self._check()
            at = self._seq if seq is None else seq
            versions = self._versions
            out: list[tuple[bytes, bytes]] = []
            for key in self._keys.irange(start, end, inclusive=(True, False), reverse=reverse):
                value = _visible(versions[key], at)
                if value is None:
                    continue
                out.append((key, b"" if keys_only else value))
                if len(out) == limit:  # limit 0 never matches: no limit
                    break
            return out

    async def get(self, key: bytes) -> bytes | None:
        return self._get(check_key(key), None)

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._batch_get(check_keys(keys), None)

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        s, e, n = check_scan(start, end, limit)
        return self._scan(s, e, n, reverse, keys_only, None)

    def snapshot(self) -> MemorySnapshot:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> MemorySnapshot:
        self._check()
        seq = self._seq
        self._live[seq] = self._live.get(seq, 0) + 1
        return MemorySnapshot(self, seq)

    # writes

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        ops = check_batch(batch)
        with self._lock:
            self._check()
            self._apply(ops)

    async def commit_if(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> None:
        with self._lock:
            self._commit_locked(check_expect(expect), check_batch(batch))

    async def commit_snapshot(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> MemorySnapshot:
        """commit_if, and a snapshot of what it left (ordered_writes)."""
        with self._lock:
            self._commit_locked(check_expect(expect), check_batch(batch))
            return self._snapshot_locked()

    def _commit_locked(self, want: list[Op], ops: list[Op]) -> None:
        self._check()
        for key, value in want:
            versions = self._versions.get(key)
            if (None if versions is None else versions[-1][1]) != value:
                raise ConflictError(f"commit_if: key {key!r} no longer holds the expected value")
        self._apply(ops)

    def _apply(self, ops: list[Op]) -> None:
        """Commit ops as the next sequence; the caller holds the lock."""
        self._fold_releases()
        seq = self._seq + 1
        versions = self._versions
        # with no open snapshot nobody can see the current versions after
        # this batch: overwrite in place and drop deleted keys right away
        keep_old = bool(self._live)
        for key, value in ops:
            vs = versions.get(key)
            if vs is None:
                if value is None:
                    continue  # deleting an absent key
                versions[key] = [(seq, value)]
                self._keys.add(key)
                continue
            if not keep_old:
                if value is None:
                    del versions[key]
                    self._keys.remove(key)
                else:
                    vs[:] = [(seq, value)]
                continue
            if vs[-1][0] == seq:
                vs[-1] = (seq, value)  # an earlier op of this batch: the later wins
            else:
                vs.append((seq, value))
            if value is None or len(vs) > 1:
                self._garbage.append((seq, key))
        self._seq = seq
        self._prune()

    def _fold_releases(self) -> None:
        released, live = self._released, self._live
        while released:
            seq = released.popleft()
            n = live.get(seq, 0) - 1
            if n > 0:
                live[seq] = n
            else:
                live.pop(seq, None)

    def _prune(self) -> None:
        """Drop versions no open snapshot can see; the caller holds the lock."""
        # every open snapshot reads at or above the watermark, so per key only
        # the version visible at the watermark and newer ones can be read
        watermark = next(iter(self._live)) if self._live else self._seq
        garbage, versions = self._garbage, self._versions
        while garbage and garbage[0][0] <= watermark:
            _, key = garbage.popleft()
            vs = versions.get(key)
            if vs is None:
                continue
            i = bisect_right(vs, watermark, key=_seq_of)
            if i > 1:
                del vs[: i - 1]
            if len(vs) == 1 and vs[0][1] is None and vs[0][0] <= watermark:
                del versions[key]
                self._keys.remove(key)

    async def close(self) -> None:
        """Drop all data; the engine and its snapshots then raise EngineClosedError."""
        with self._lock:
            self._closed = True
            self._keys = SortedList()
            self._versions = {}
            self._garbage.clear()
