"""brainpb.Migration: a running brain as a migration's target (`brain
migrate --to`, brain/migrate/remote.py).

Only a brain started with --migration-target takes a migration, and only
into a store holding nothing yet, or one this source's migration started.
Until the cut-over its store refuses every client write, compaction and
lease request with etcd's learner error, and serves reads and watches at
the source's revisions as they arrive. The source's revisions go through
the store's writer at their own numbers (store.write(imported=True)), so
watchers see them; the copied keys of the base, which belong to no event,
are written beside the writer and served at once when complete
(store.adopt_engine_state). One migration's calls are served one at a
time."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import grpc

from brain.etcdpb import kv_pb2, migration_pb2 as mpb
from brain.migrate.importer import (
    META_CUT_OVER, META_SOURCE, Event, MigrationError, MigrationRefusedError, RevisionImporter, revision_changes,
)
from brain.mvcc.kv import Change, Store, TxnWrite
from brain.mvcc.txn_write import YIELD_EVERY
from brain.server.status import generic, unary
from engines.base import Engine, WriteBatch

log = logging.getLogger(__name__)

# A revision sent in parts (remote.py) is held until its last part; past
# this, the migration is refused rather than the memory taken.
MAX_PENDING_REVISION_BYTES = 256 * 1024 * 1024


def _refused(message: str) -> MigrationRefusedError:
    return MigrationRefusedError(message)


async def target_state(engine: Engine) -> str:
    """'empty', 'migrating' (a migration not cut over), 'cut over', or
    'other' (a store that is no migration's)."""
    source, cut_over = await engine.batch_get([META_SOURCE, META_CUT_OVER])
    if source is not None:
        return "cut over" if cut_over is not None else "migrating"
    try:
        await RevisionImporter(engine).open(0)
    except MigrationError:
        return "other"
    return "empty"


async def mark_cut_over(engine: Engine) -> None:
    wb = WriteBatch()
    wb.put(META_CUT_OVER, b"")
    await engine.write(wb, sync=True)


class MigrationService:
    def __init__(self, store: Store, engine: Engine, accepting: bool,
                 cut_over: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.engine = engine
        self.accepting = accepting
        self._cut_over = cut_over
        self.importer = RevisionImporter(engine)
        self.source: int | None = None  # the source of the current run, once opened
        self.base_done = False
        self._part: tuple[int, list[Event], int] | None = None  # revision, events so far, bytes
        self._lease_ids: set[int] | None = None
        self._lock = asyncio.Lock()

    def _check(self, opened: bool = True) -> None:
        if not self.accepting:
            raise _refused("this brain takes no migration: start it with --migration-target on an empty data "
                           "directory (a migration it took has been cut over)")
        if opened and self.source is None:
            raise _refused("no migration opened (Open first)")

    async def open(self, r: mpb.OpenRequest) -> mpb.OpenResponse:
        async with self._lock:
            self._check(opened=False)
            try:
                resumed = await self.importer.open(r.source_cluster_id)
            except MigrationError as e:
                raise _refused(str(e)) from None
            self.source = r.source_cluster_id
            self.base_done = resumed
            self._part = None
            store = self.store
            return mpb.OpenResponse(resumed=resumed, revision=store.rev if resumed else 1,
                                    compact_revision=store.compact_rev)

    async def begin(self, r: mpb.BeginRequest) -> mpb.MigrationResponse:
        async with self._lock:
            self._check()
            if r.source_cluster_id != self.source or self.base_done:
                raise _refused("a migration is under way here: Open it again to carry on")
            await self.importer.begin(r.source_cluster_id, r.compact_revision)
            return mpb.MigrationResponse(revision=self.store.rev)

    async def base(self, r: mpb.BaseRequest) -> mpb.MigrationResponse:
        async with self._lock:
            self._check()
            if self.base_done:
                raise _refused("the keys of the base are copied already")
            count = await self.importer.base(r.kvs)
            if r.last:
                await self.importer.finish_base()
                await self.store.adopt_engine_state()
                self.base_done = True
                log.info("migration: base copied, serving revision %d (compact revision %d)",
                         self.store.rev, self.store.compact_rev)
            return mpb.MigrationResponse(revision=self.store.rev, count=count)

    async def apply(self, r: mpb.ApplyRequest) -> mpb.MigrationResponse:
        async with self._lock:
            self._check()
            if not self.base_done:
                raise _refused("revisions before the base is complete")
            writes = []
            for part in r.revisions:
                rev = part.revision
                events = [Event(ev.kv.key, None if ev.type == kv_pb2.Event.DELETE else ev.kv) for ev in part.events]
                if self._part is not None:
                    held_rev, held, size = self._part
                    if held_rev != rev:
                        raise _refused(f"revision {rev} arrives before the rest of revision {held_rev}")
                    held.extend(events)  # not held + events: a copy per part
                    events = held
                    self._part = None
                else:
                    size = 0
                if part.continued:
                    size += part.ByteSize()
                    if size > MAX_PENDING_REVISION_BYTES:
                        raise _refused(f"revision {rev} holds more than {MAX_PENDING_REVISION_BYTES >> 20} MiB of changes")
                    self._part = (rev, events, size)
                    continue
                # queued in order now, so that the writer applies them in
                # order (and folds them into few engine commits)
                writes.append(asyncio.ensure_future(self.store.write(_importer(rev, events), imported=True)))
            results = await asyncio.gather(*writes, return_exceptions=True)
            for result in results:
                if isinstance(result, MigrationError):
                    raise _refused(str(result))
                if isinstance(result, BaseException):
                    raise result
            return mpb.MigrationResponse(revision=self.store.rev, count=len(writes))

    async def leases(self, r: mpb.LeasesRequest) -> mpb.MigrationResponse:
        async with self._lock:
            self._check()
            if r.first or self._lease_ids is None:
                self._lease_ids = set()
            ttls = {lease.ID: lease.TTL for lease in r.leases}
            await self.importer.put_leases(ttls)
            self._lease_ids.update(ttls)
            if r.last:
                await self.importer.drop_leases_except(self._lease_ids)
                count = len(self._lease_ids)
                self._lease_ids = None
                return mpb.MigrationResponse(revision=self.store.rev, count=count)
            return mpb.MigrationResponse(revision=self.store.rev, count=len(ttls))

    async def cut_over(self, r: mpb.CutOverRequest) -> mpb.MigrationResponse:
        async with self._lock:
            self._check()
            if not self.base_done or self._part is not None:
                raise _refused("the migration is not complete: nothing to cut over to")
            await mark_cut_over(self.engine)
            self.accepting = False
            await self._cut_over()
            log.info("migration cut over at revision %d: taking writes", self.store.rev)
            return mpb.MigrationResponse(revision=self.store.rev)

    def handler(self) -> grpc.GenericRpcHandler:
        return generic(
            "brainpb.Migration",
            {
                "Open": unary(self.open, mpb.OpenRequest, mpb.OpenResponse),
                "Begin": unary(self.begin, mpb.BeginRequest, mpb.MigrationResponse),
                "Base": unary(self.base, mpb.BaseRequest, mpb.MigrationResponse),
                "Apply": unary(self.apply, mpb.ApplyRequest, mpb.MigrationResponse),
                "Leases": unary(self.leases, mpb.LeasesRequest, mpb.MigrationResponse),
                "CutOver": unary(self.cut_over, mpb.CutOverRequest, mpb.MigrationResponse),
            },
        )


def _importer(rev: int, events: list[Event]) -> Callable[[TxnWrite], Awaitable[int]]:
    """The write function taking the source's revision rev into the store."""

    async def apply(txn: TxnWrite) -> int:
        if rev != txn.begin_rev + 1:
            raise MigrationError(f"revision {rev} does not follow revision {txn.begin_rev}")
        changes: list[Change] = []
        for i in range(0, len(events), YIELD_EVERY):
            if i:
                await asyncio.sleep(0)  # a revision of many changes lets reads run
            some = events[i : i + YIELD_EVERY]
            changes += revision_changes(rev, some, [await txn.get(e.key) for e in some])
        if not changes:
            raise MigrationError(f"revision {rev} changes no key this store holds")
        txn.take(changes)
        return rev

    return apply
