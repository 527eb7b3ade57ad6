"""The write side of MVCC: a group-commit batch and the write transactions in it.

A `Batch` collects the changes of every request the writer applies between
two engine commits. Requests in one batch see each other's writes (the batch
overlay on top of the last committed view), so applying them one after
another in one batch gives the same answers as committing each alone, while
one engine write (one fsync) makes them all durable.

A `WriteTxn` is one request's view of the batch, with etcd's TxnWrite
semantics: all its changes share one revision (begin_rev + 1); a request that
changes nothing consumes no revision; its ranges see its own earlier writes.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from brain.mvcc import records as K
from brain.mvcc.copy_ahead import MIN_KEYS, CopyAhead
from brain.mvcc.errors import CompactedError, FutureRevisionError
from brain.etcdpb import kv_pb2
from brain.mvcc.kv import Change, RangeEnd, RawRange, TxnWrite
from brain.mvcc.view import ReadView
from brain.wire.stored import tombstone, tombstone_suffix
from engines.base import WriteBatch

KeyValue = kv_pb2.KeyValue
_parse_kv = KeyValue.FromString

# Keys a request changes between two turns of the event loop.
YIELD_EVERY = 1024


def _in_range(k: bytes, key: bytes, end: RangeEnd) -> bool:
    if end is None:
        return k == key
    if end == b"":
        return k >= key
    return key <= k < end


@dataclass(slots=True)
class Batch:
    view: ReadView
    rev: int
    latest: dict[bytes, bytes | None] = field(default_factory=dict)
    # every change not yet in view: those of an uncommitted batch this one
    # follows (changes[:own_from]), then this batch's own
    changes: list[Change] = field(default_factory=list)
    own_from: int = 0
    # how copies of committed versions are written ahead of the batch; None
    # where the engine is shared (copy_ahead.py)
    copy_writer: Callable[[WriteBatch], Awaitable[None]] | None = None
    copies: CopyAhead | None = None

    @classmethod
    def on(cls, view: ReadView, pending: Batch | None = None) -> Batch:
        """A batch on the committed view, or after a batch whose commit is
        still in flight (pipelining: apply the next batch during the fsync)."""
        if pending is None:
            return cls(view, view.rev)
        changes = pending.changes
        if not changes or changes[0].rev > view.rev:
            # none committed yet (the usual case while a commit is in
            # flight): the pending batch's own overlay, copied whole
            return cls(view, pending.rev, dict(pending.latest), list(changes), len(changes))
        kept = [c for c in changes if c.rev > view.rev]
        latest = {c.key: (None if c.deleted else c.kv) for c in kept}
        return cls(view, pending.rev, latest, kept, len(kept))

    @property
    def own_changes(self) -> list[Change]:
        return self.changes[self.own_from :] if self.own_from else self.changes

    def copy_ahead(self) -> CopyAhead | None:
        """The batch's copies ahead, started at the first call; None where
        the engine does not allow them."""
        if self.copies is None and self.copy_writer is not None:
            self.copies = CopyAhead(self.copy_writer, self.view.rev)
        return self.copies

    def absorb(self, txn: WriteTxn) -> None:
        if not txn.changes:
            return
        self.rev = txn.begin_rev + 1
        self.changes.extend(txn.changes)
        self.latest.update(txn.latest)


class WriteTxn:
    __slots__ = ("batch", "begin_rev", "changes", "latest", "lease_exists", "_tombstone_suffix")

    def __init__(self, batch: Batch, lease_exists=None) -> None:
        self.batch = batch
        self.begin_rev = batch.rev
        self.changes: list[Change] = []
        self.latest: dict[bytes, bytes | None] = {}
        self.lease_exists = lease_exists
        self._tombstone_suffix: bytes | None = None

    # -- reads -------------------------------------------------------------

    def rev(self) -> int:
        """The revision reads see: begin_rev, or begin_rev + 1 once written."""
        return self.begin_rev + 1 if self.changes else self.begin_rev

    @property
    def compact_rev(self) -> int:
        return self.batch.view.compact_rev

    def check_rev(self, rev: int) -> int:
        cur = self.rev()
        if rev > cur:
            raise FutureRevisionError()
        if rev <= 0:
            return cur
        if rev < self.batch.view.compact_rev:
            raise CompactedError()
        return rev

    async def get(self, key: bytes) -> bytes | None:
        """The serialized live KeyValue of key, this txn's writes included."""
        latest = self.latest
        if key in latest:
            return latest[key]
        latest = self.batch.latest
        if key in latest:
            return latest[key]
        return await self.batch.view.get_live(key)

    async def range(
        self, key: bytes, end: RangeEnd, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RawRange:
        rev = self.check_rev(rev)
        view = self.batch.view
        if rev == self.rev() and end is None:
            raw = await self.get(key)
            if raw is None:
                return RawRange([], 0)
            return RawRange([] if count_only else [raw], 1)
        overlay = [c for c in self.batch.changes if c.rev <= rev and _in_range(c.key, key, end)]
        if rev > self.begin_rev:
            overlay.extend(c for c in self.changes if _in_range(c.key, key, end))
        base_rev = min(rev, view.rev)
        if not overlay:
            return await view.range(key, end, base_rev, limit, count_only)
        base = await view.range(key, end, base_rev, 0, False)
        state: dict[bytes, bytes] = {_parse_kv(raw).key: raw for raw in base.kvs}
        for c in overlay:
            if c.deleted:
                state.pop(c.key, None)
            else:
                state[c.key] = c.kv
        count = len(state)
        if count_only:
            return RawRange([], count)
        kvs = [state[k] for k in sorted(state)]
        if limit > 0:
            kvs = kvs[:limit]
        return RawRange(kvs, count)

    def uncommitted_changes(self) -> list[Change]:
        """The batch's changes before this txn's, not yet in the engine."""
        return self.batch.changes

    # -- writes ------------------------------------------------------------

    async def put(
        self, key: bytes, value: bytes, lease: int, known: tuple[bytes | None, KeyValue | None] | None = None
    ) -> int:
        """known: what get(key) returns now, and its parse if made (None:
        not parsed), when the caller has just read it."""
        rev = self.begin_rev + 1
        if known is None:
            prev, p = await self.get(key), None
        else:
            prev, p = known
        prev_lease = prev_rev = 0
        if prev is None:
            kv = KeyValue(key=key, value=value, create_revision=rev, mod_revision=rev, version=1, lease=lease)
        else:
            if p is None:
                p = _parse_kv(prev)
            prev_lease, prev_rev = p.lease, p.mod_revision
            kv = KeyValue(
                key=key, value=value, create_revision=p.create_revision,
                mod_revision=rev, version=p.version + 1, lease=lease,
            )
        raw = kv.SerializeToString()
        self.latest[key] = raw
        self.changes.append(Change(rev, key, raw, prev, False, lease, prev_lease, prev_rev))
        return rev

    async def delete_range(self, key: bytes, end: RangeEnd) -> tuple[int, int]:
        """Delete live keys in [key, end); returns (deleted, revision)."""
        found = await self.range(key, end, 0, 0, False)
        if not found.kvs:
            return 0, self.rev()
        rev = self.begin_rev + 1
        suffix = tombstone_suffix(rev)
        delete = self._delete
        # a big delete writes the copies of committed versions ahead of its
        # batch, while it goes on (copy_ahead.py)
        copies = self.batch.copy_ahead() if len(found.kvs) >= MIN_KEYS else None
        for i, raw in enumerate(found.kvs):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                if copies is not None:
                    copies.send_full()
                # a large delete lets reads run (the writer applies nothing
                # else meanwhile; reads use the committed view)
                await asyncio.sleep(0)
            kv = _parse_kv(raw)
            copied = False
            if copies is not None and kv.mod_revision <= copies.committed:
                copies.buffer.append((K.history_key(kv.key, kv.mod_revision), raw))
                copied = True
            delete(raw, kv, rev, suffix, copied)
        return len(found.kvs), rev

    def delete_live(self, raw: bytes, kv: KeyValue) -> int:
        rev = self.begin_rev + 1
        suffix = self._tombstone_suffix
        if suffix is None:  # once per txn: a revoke calls this for every key
            suffix = self._tombstone_suffix = tombstone_suffix(rev)
        self._delete(raw, kv, rev, suffix)
        return rev

    def _delete(self, raw: bytes, kv: KeyValue, rev: int, suffix: bytes, copied: bool = False) -> None:
        key = kv.key
        self.latest[key] = None
        self.changes.append(Change(rev, key, tombstone(key, suffix), raw, True, 0, kv.lease, kv.mod_revision, copied))

    def take(self, changes: list[Change]) -> None:
        """Another store's changes at revision begin_rev + 1, each as that
        store made it (its own create revision, version, lease): a
        migration's import (brain/migrate). prev of each change must be
        what get() returns for its key."""
        rev = self.begin_rev + 1
        for c in changes:
            if c.rev != rev:
                raise ValueError(f"a change at revision {c.rev} in revision {rev}")
            self.latest[c.key] = None if c.deleted else c.kv
        self.changes.extend(changes)


# held to the interface by the type checker
_IMPLEMENTS: type[TxnWrite] = WriteTxn
