"""Writing another store's revisions into a brain engine, each under its
own revision number, so that every key keeps its create and mod revision
and version, and the store its revision and compact revision.

What a source's change becomes in brain (revision_changes, base_changes) is
written once, here, for both targets of a migration (brain/migrate/target.py):
a data directory nobody serves, written directly by RevisionImporter, and a
running brain, whose store takes the same changes through its writer
(brain/server/migration.py), which also uses RevisionImporter for what is
written beside the writer (the migration's marks, the copied keys, leases).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from brain.errors import DomainError
from brain.etcdpb import kv_pb2
from brain.lease import record as lease_record
from brain.mvcc import records as K
from brain.mvcc.kv import Change
from engines.base import Engine, WriteBatch

# Marks a store as a migration's target: the source's cluster id, so a
# second run resumes from the revision reached instead of starting over.
META_SOURCE = b"mmigrate-source"
# Marks a migrated store that has been served writable (the cut-over): its
# revisions are no longer only the source's, so no migration may go on.
META_CUT_OVER = b"mmigrate-cut-over"


class MigrationError(Exception):
    """The source's history cannot be written here (out of order, mixed sources)."""


class MigrationRefusedError(DomainError):
    """A migration's call the target refuses (not a target, not opened, out
    of order, too large), with why."""


@dataclass
class Event:
    """One key changed at one revision: its new version, or a delete."""

    key: bytes
    kv: kv_pb2.KeyValue | None  # None: deleted


def base_changes(kvs: Iterable[kv_pb2.KeyValue]) -> list[Change]:
    """Keys live at the compact revision, each at its own mod revision."""
    return [Change(kv.mod_revision, kv.key, kv.SerializeToString(), None, False, kv.lease) for kv in kvs]


def revision_changes(rev: int, events: Sequence[Event], prevs: Sequence[bytes | None]) -> list[Change]:
    """The source's changes at rev; prevs: each key's live version before
    it (serialized), or None."""
    changes: list[Change] = []
    for event, prev in zip(events, prevs):
        prev_rev = prev_lease = 0
        if prev is not None:
            p = kv_pb2.KeyValue.FromString(prev)
            prev_rev, prev_lease = p.mod_revision, p.lease
        if event.kv is None:
            if prev is None:
                continue  # a delete of a key this store never saw live
            tomb = K.encode_tombstone(event.key, rev)
            changes.append(Change(rev, event.key, tomb, prev, True, 0, prev_lease, prev_rev))
        else:
            kv = event.kv
            changes.append(Change(rev, event.key, kv.SerializeToString(), prev, False, kv.lease, prev_lease, prev_rev))
    return changes


class RevisionImporter:
    """The migration's writes to an engine that no MVCC writer is writing
    to: a data directory not served, or, on a running target, the writes
    made beside its refusing writer."""

    def __init__(self, engine: Engine, sync: bool = False) -> None:
        self.engine = engine
        self.sync = sync
        self.rev = 1
        self.compact_rev = 0

    async def open(self, source_id: int) -> bool:
        """Read where a previous run stopped. True when resuming; a store
        holding anything but this source's migration is refused."""
        raw_source, raw_rev, cut_over = await self.engine.batch_get([META_SOURCE, K.META_REVISION, META_CUT_OVER])
        if raw_source is None:
            if raw_rev is not None or not await self._holds_nothing():
                raise MigrationError("the data directory holds a store that is not a migration target: use a new directory")
            return False
        if int.from_bytes(raw_source, "big") != source_id:
            raise MigrationError("the data directory was migrated from another cluster: use a new directory")
        if cut_over is not None:
            raise MigrationError("this store was cut over (served writable) and holds writes of its own: "
                                 "migrate into a new directory")
        if raw_rev is None:
            raise MigrationError("an earlier run stopped while copying the keys, before the copy was complete: "
                                 "start again in a new directory")
        self.rev = K.decode_rev(raw_rev)
        scheduled = await self.engine.get(K.META_COMPACT_SCHEDULED)
        self.compact_rev = K.decode_rev(scheduled)
        return True

    async def _holds_nothing(self) -> bool:
        """No key, version or lease (a served brain's identity and other
        metadata may be there)."""
        for lo, hi in ((K.INDEX, K.INDEX_END), (K.HISTORY, K.HISTORY_END), (K.LEASE, K.LEASE_END)):
            if await self.engine.scan(lo, hi, limit=1, keys_only=True):
                return False
        return True

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
        (no revision log: nothing replays or compacts at or below it). The
        store's revision is written only by finish_base: a store without one
        is a copy that did not finish."""
        changes = base_changes(kvs)
        if changes:
            wb = WriteBatch()
            K.encode_changes(wb, {}, changes)  # no revision log, and no store revision yet
            await self.engine.write(wb, sync=self.sync)
        return len(changes)

    async def finish_base(self) -> None:
        self.rev = max(self.compact_rev, 1)
        wb = WriteBatch()
        wb.put(K.META_REVISION, K.pack_rev(self.rev))
        await self.engine.write(wb, sync=True)

    async def revisions(self, revisions: Sequence[tuple[int, list[Event]]]) -> None:
        for rev, events in revisions:
            await self.revision(rev, events)

    async def revision(self, rev: int, events: list[Event]) -> None:
        """The source's changes at rev, applied at rev."""
        if rev <= self.rev:
            raise MigrationError(f"revision {rev} arrives after revision {self.rev}: the source's history is out of order")
        prevs = await self.engine.batch_get([K.index_key(e.key) for e in events])
        wb = K.encode_batch(revision_changes(rev, events, prevs), rev)
        await self.engine.write(wb, sync=self.sync)
        self.rev = rev

    async def put_leases(self, ttls: dict[int, int]) -> None:
        """Store leases (id -> TTL the lease starts with when brain opens
        the store)."""
        wb = WriteBatch()
        for lease_id, ttl in ttls.items():
            wb.put(K.lease_key(lease_id), lease_record.encode(ttl))
        await self.engine.write(wb, sync=True)

    async def drop_leases_except(self, keep: set[int]) -> None:
        wb = WriteBatch()
        start = K.LEASE
        while True:
            items = await self.engine.scan(start, K.LEASE_END, limit=1024, keys_only=True)
            for key, _ in items:
                if lease_record.decode_id(key) not in keep:
                    wb.delete(key)
            if len(items) < 1024:
                break
            start = items[-1][0] + b"\x00"
        await self.engine.write(wb, sync=True)

    async def leases(self, ttls: dict[int, int]) -> None:
        """Make the stored leases exactly ttls."""
        await self.put_leases(ttls)
        await self.drop_leases_except(set(ttls))

    async def flush(self) -> None:
        await self.engine.write(WriteBatch(), sync=True)

    async def close(self) -> None:
        await self.engine.close()
