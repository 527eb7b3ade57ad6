"""The MVCC store: revisioned keys over an engine, with one group-committing writer.

Reads never queue: they use the current ReadView (the last committed engine
snapshot and its revision). Writes are functions of a WriteTxn, queued to one
writer task. The writer applies every queued request to one Batch, commits the
batch as one engine write (one fsync), then publishes a new view, tells the
commit listeners (watch, lease) what changed, and answers the requests. The
revision counter is allocated inside that loop, so it is gap-free, and a
request that changes nothing (a failed compare) consumes no revision.

One concept a module: what the store holds (store_state.py), committing a
batch to the engine (engine_commit.py), the group-commit writer (writer.py);
this module opens the store, takes requests, follows other processes'
commits and closes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from brain.errors import StoppedError
from brain.mvcc import records as K
from brain.mvcc.keyset import ensure_keyset
from brain.mvcc.kv import Change, Store, WriteFn
from brain.mvcc.txn_read import ReadTxn
from brain.mvcc.view import ReadView
from brain.mvcc.writer import GroupCommitWriter
from engines.base import Engine, Snapshot

log = logging.getLogger(__name__)


class MVCCStore(GroupCommitWriter):
    @classmethod
    async def open(cls, engine: Engine, *, sync: bool = True) -> MVCCStore:
        store = cls(engine, sync=sync)
        await ensure_keyset(engine)
        rev = K.decode_rev(await engine.get(K.META_REVISION), K.FRESH_REVISION)
        compact_rev = K.decode_rev(await engine.get(K.META_COMPACT_SCHEDULED))
        finished_rev = K.decode_rev(await engine.get(K.META_COMPACT_FINISHED))
        snap = engine.snapshot()
        store._start_index(snap, rev)
        store._view = ReadView(snap, rev, compact_rev, store.index)
        store.compactor.finished = finished_rev
        store._writer = asyncio.get_running_loop().create_task(store._write_loop(), name="mvcc-writer")
        if finished_rev < compact_rev:
            log.info("resuming interrupted compaction %d -> %d", finished_rev, compact_rev)
            store.compactor.start(compact_rev)
        return store

    def read_txn(self) -> ReadTxn:
        return ReadTxn(self.view)

    def writer_running(self) -> bool:
        writer = self._writer
        return writer is not None and not writer.done()

    def follow(self, changes: list[Change], rev: int, snapshot: Snapshot, compact_rev: int, snapshot_rev: int = 0) -> None:
        """Publish revisions another brain process committed (read back from
        the engine's revision log by brain/cluster/follower.py): the view
        moves to rev at snapshot, and the listeners see the changes as if
        this process had committed them. Revisions at or below the current
        one are already published and are left out. snapshot_rev: the
        revision the snapshot holds, when it is past rev (see ReadView)."""
        view = self._view
        assert view is not None
        if rev <= view.rev:
            if compact_rev > view.compact_rev:  # compacted without a new revision
                self.index.forget_below(compact_rev)
                self._view = ReadView(view.snapshot, view.rev, compact_rev, self.index, view.snapshot_rev)
            return
        fresh = [c for c in changes if c.rev > view.rev]
        self._index_apply(fresh, rev)
        if compact_rev > view.compact_rev:
            self.index.forget_below(compact_rev)
        self._view = ReadView(snapshot, rev, max(compact_rev, view.compact_rev), self.index, snapshot_rev)
        for listener in self._listeners:
            try:
                listener(fresh, rev)
            except Exception:
                log.exception("commit listener failed")

    async def write(self, fn: WriteFn, *, imported: bool = False) -> Any:
        """Apply fn to a WriteTxn in the next group commit; its result once
        durable. imported: a migration's revision, taken while other writes
        are refused (writes_refused)."""
        if self._closed:
            raise StoppedError()
        if self.writes_refused is not None and not imported:
            raise self.writes_refused()
        self._check_fence()
        fut = self._loop.create_future()
        self._queue.put((fn, fut))
        self.proposals_submitted += 1
        return await fut

    async def compact(self, rev: int, physical: bool) -> int:
        """etcd's Compact: returns the store revision at the time it was applied."""
        if self._closed:
            raise StoppedError()
        if self.writes_refused is not None:
            raise self.writes_refused()
        self._check_fence()
        fut = self._loop.create_future()
        self._queue.put((("compact", rev), fut))
        self.proposals_submitted += 1
        cur = await fut
        if physical:
            await self.compactor.wait(rev)
        return cur

    async def close(self) -> None:
        """Finish queued writes, stop compaction, leave the engine open to the caller."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            await self._writer
        if self._index_loader is not None and not self._index_loader.done():
            self._index_loader.cancel()
            try:
                await self._index_loader
            except asyncio.CancelledError:
                pass
        await self.compactor.stop()


# held to the interface by the type checker
_IMPLEMENTS: type[Store] = MVCCStore
