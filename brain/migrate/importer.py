"""Writing another store's revisions into a brain engine, each under its
own revision number, so that every key keeps its create and mod revision
and version, and the store its revision and compact revision.

The data directory is not served while this runs: the importer is its one
writer, which is what lets it write engine batches directly (through the
store's own encoding, brain/mvcc/store.py encode_batch) instead of through
the MVCC writer that numbers revisions itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from brain.etcdpb import kv_pb2
from brain.lease import record as lease_record
from brain.mvcc import keys as K
from brain.mvcc.store import encode_batch
from brain.mvcc.txn_write import Change
from engines.base import Engine, WriteBatch

# Marks a data directory as a migration's target: the source's cluster id,
# so a second run resumes from the revision reached instead of starting over.
META_SOURCE = b"mmigrate-source"


class MigrationError(Exception):
    """The source's history cannot be written here (out of order, mixed sources)."""


@dataclass
class Event:
    """One key changed at one revision: its new version, or a delete."""

    key: bytes
    kv: kv_pb2.KeyValue | None  # None: deleted


class RevisionImporter:
    def __init__(self, engine: Engine, sync: bool = False) -> None:
        self.engine = engine
        self.sync = sync
        self.rev = 1
        self.compact_rev = 0

    async def open(self, source_id: int) -> bool:
        """Read where a previous run stopped. True when resuming; a directory
        holding anything but this source's migration is refused."""
        raw_source, raw_rev = await self.engine.batch_get([META_SOURCE, K.META_REVISION])
        if raw_source is None:
            if raw_rev is not None or await self.engine.scan(b"", None, limit=1):
                raise MigrationError("the data directory holds a store that is not a migration target: use a new directory")
            return False
        if int.from_bytes(raw_source, "big") != source_id:
            raise MigrationError("the data directory was migrated from another cluster: use a new directory")
        self.rev = K.unpack_rev(raw_rev)[0] if raw_rev else 1
        scheduled = await self.engine.get(K.META_COMPACT_SCHEDULED)
        self.compact_rev = K.unpack_rev(scheduled)[0] if scheduled else 0
        return self.rev > 1 or self.compact_rev > 0

    async def begin(self, source_id: int, compact_rev: int) -> None:
        """Start a migration whose base is the source's state at compact_rev."""
        wb = WriteBatch()
        wb.put(META_SOURCE, source_id.to_bytes(8, "big"))
        wb.put(K.META_KEYSET, b"")  # the key set records are written with every key
        if compact_rev:
            wb.put(K.META_COMPACT_SCHEDULED, K.pack_rev(compact_rev))
            wb.put(K.META_COMPACT_FINISHED, K.pack_rev(compact_rev))
        await self.engine.write(wb, sync=True)
        self.compact_rev = compact_rev

    async def base(self, kvs: Iterable[kv_pb2.KeyValue]) -> int:
        """Keys live at the compact revision, each at its own mod revision
        (no revision log: nothing replays or compacts at or below it)."""
        changes = [Change(kv.mod_revision, kv.key, kv.SerializeToString(), None, False, kv.lease) for kv in kvs]
        if changes:
            wb = encode_batch(changes, max(self.compact_rev, 1), events=False)
            await self.engine.write(wb, sync=self.sync)
        return len(changes)

    async def finish_base(self) -> None:
        self.rev = max(self.compact_rev, 1)
        wb = WriteBatch()
        wb.put(K.META_REVISION, K.pack_rev(self.rev))
        await self.engine.write(wb, sync=True)

    async def revision(self, rev: int, events: list[Event]) -> None:
        """The source's changes at rev, applied at rev."""
        if rev <= self.rev:
            raise MigrationError(f"revision {rev} arrives after revision {self.rev}: the source's history is out of order")
        keys = [e.key for e in events]
        prevs = await self.engine.batch_get([K.INDEX + k for k in keys])
        changes: list[Change] = []
        for event, prev in zip(events, prevs):
            prev_rev = prev_lease = 0
            if prev is not None:
                p = kv_pb2.KeyValue.FromString(prev)
                prev_rev, prev_lease = p.mod_revision, p.lease
            if event.kv is None:
                if prev is None:
                    continue  # a delete of a key this store never saw live
                tomb = kv_pb2.KeyValue(key=event.key, mod_revision=rev).SerializeToString()
                changes.append(Change(rev, event.key, tomb, prev, True, 0, prev_lease, prev_rev))
            else:
                kv = event.kv
                changes.append(Change(rev, event.key, kv.SerializeToString(), prev, False, kv.lease, prev_lease, prev_rev))
        wb = encode_batch(changes, rev)
        await self.engine.write(wb, sync=self.sync)
        self.rev = rev

    async def leases(self, ttls: dict[int, int]) -> None:
        """Make the stored leases exactly ttls (id -> TTL the lease starts
        with when brain opens the directory)."""
        wb = WriteBatch()
        start = K.LEASE
        while True:
            items = await self.engine.scan(start, K.LEASE_END, limit=1024, keys_only=True)
            for key, _ in items:
                if lease_record.decode_id(key) not in ttls:
                    wb.delete(key)
            if len(items) < 1024:
                break
            start = items[-1][0] + b"\x00"
        for lease_id, ttl in ttls.items():
            wb.put(K.lease_key(lease_id), lease_record.encode(ttl))
        await self.engine.write(wb, sync=True)

    async def flush(self) -> None:
        await self.engine.write(WriteBatch(), sync=True)
