"""Committing a group commit's batch to the engine. The commit is made
conditional on the revision key (and the fence's expectations) where
another write may race it; an outcome the engine could not report is
settled by reading the revision back; and a commit refused because another
brain process wrote to the engine reloads the store from the engine (as
does a migration that wrote beside the writer).
"""
from __future__ import annotations

import asyncio
import logging

from brain.errors import DiskFullError, NoLeaderError, RequestTimeoutError
from brain.mvcc import records as K
from brain.mvcc.kv import Change
from brain.mvcc.store_state import StoreState
from brain.mvcc.view import ReadView
from engines.base import CommitUnknownError, ConflictError, EngineError, EngineFullError, Snapshot, WriteBatch

log = logging.getLogger(__name__)


class EngineCommit(StoreState):
    async def _commit(self, wb: WriteBatch, changes: list[Change], prev: int, rev: int, chained: bool = False) -> Snapshot | None:
        """Commit the engine writes of the batch taking the store from
        revision prev to rev; a snapshot of the engine at rev once they are
        in it, None when they are not.

        An engine that several brain processes may open (`shared`, e.g. TiKV)
        takes the batch only if its revision key still holds prev: otherwise
        another process has written, this one's state is stale, and the batch
        fails while the store reloads. When the engine cannot tell whether a
        commit applied (CommitUnknownError), the revision key tells: rev if
        it did, prev if it did not. So no revision is skipped or used twice,
        and with one brain process per engine, a request that fails with
        ErrTimeout was not written."""
        if self._fenced:
            log.error("not committing revision %d: the outcome of an earlier commit is unknown", rev)
            self._commit_failure = RequestTimeoutError
            return None
        before = K.pack_rev(prev) if prev > 1 else None  # a fresh store has no revision key
        shared = self.engine.features.shared
        expect: list[tuple[bytes, bytes | None]] = [(K.META_REVISION, before)]
        fence = self.fence
        if fence is not None:
            if not fence.admits_writes():
                log.error("not committing revision %d: this process is not the leader", rev)
                self._commit_failure = NoLeaderError
                return None
            expect += fence.expectations()
        engine = self.engine
        try:
            if fence is not None:
                async with self.fence_lock:
                    return await self._write(expect, wb)
            return await self._write(expect if shared or chained else [], wb)
        except ConflictError as e:
            if not shared:
                # queued behind a write that failed (its batch fails too)
                log.error("engine commit of revision %d refused: the write before it did not land", rev)
                return None
            log.error("engine commit of revision %d refused: another brain process has written to this engine (%s)", rev, e)
            self._commit_failure = RequestTimeoutError
            await self._reload()
            return None
        except CommitUnknownError as e:
            log.warning("engine commit of revision %d: outcome unknown (%s); reading the revision back", rev, e)
            self._commit_failure = RequestTimeoutError
            # (no engine declaring ordered_writes reports an unknown outcome:
            # with none, no later batch can be in the engine by now)
            return engine.snapshot() if await self._settle(before, rev, wb) else None
        except EngineFullError as e:
            # nothing of the batch was written: the store stays at prev and
            # takes writes again once space is freed
            log.error("engine commit of revision %d failed, the disk is full: %s", rev, e)
            self._commit_failure = DiskFullError
            return None
        except EngineError as e:
            log.error("engine commit failed: %s", e)
            self._commit_failure = RequestTimeoutError
            return None

    async def _write(self, expect: list[tuple[bytes, bytes | None]], wb: WriteBatch) -> Snapshot:
        """The engine write (conditional when expect is not empty) and a
        snapshot of what it left: the engine's own when it may already hold
        the next batch by the time this call returns (ordered_writes)."""
        if self.pipelined is not None:
            return await self.pipelined.commit_snapshot(expect, wb, sync=self.sync)
        if expect:
            await self.engine.commit_if(expect, wb, sync=self.sync)
        else:
            await self.engine.write(wb, sync=self.sync)
        return self.engine.snapshot()

    async def _settle(self, before: bytes | None, rev: int, wb: WriteBatch) -> bool:
        """Whether a commit with an unknown outcome applied, from the engine's
        revision key. Asks until the engine answers: the writer must not go on
        without knowing which revision the store is at."""
        landed = K.pack_rev(rev)
        delay = 0.05
        while True:
            mine = False
            try:
                raw = await self.engine.get(K.META_REVISION)
                if raw == landed:
                    # another brain process sharing the engine may have
                    # written this revision number: it is this batch only if
                    # the records it wrote are there (the index records tell
                    # the two apart; history holds LIVE markers for both)
                    wrote = {k: v for k, v in wb.ops if v is not None}  # what the batch wrote
                    keys = list(wrote)
                    stored = await self.engine.batch_get(keys)
                    mine = stored == [wrote[k] for k in keys]
            except EngineError as e:
                if self._closed:
                    # stopping: the next start reads the revision from the
                    # engine; until then this process commits nothing more
                    log.error("store closing before the commit of revision %d could be confirmed (%s)", rev, e)
                    self._fenced = True
                    return False
                log.warning("cannot read the revision back yet (%s); asking again in %.2fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if raw == landed and mine:
                log.warning("the commit of revision %d did apply", rev)
                return True
            if raw == before:
                log.warning("the commit of revision %d did not apply", rev)
                return False
            log.error("revision %d is not this process's batch, nor is the store still at the one before: another brain process has written to this engine", rev)
            await self._reload()
            return False

    async def adopt_engine_state(self) -> None:
        """Serve what was written to the engine beside the writer while it
        took no writes (a migration's copy of another store's keys, brain/
        migrate): the engine's revision, compact revision and keys. The
        listeners are told of the new revision with no changes: the
        revisions skipped have no events (watchers from before them are
        answered as compacted)."""
        old = self.view.rev
        await self._reload()
        if self.rev != old:
            for listener in self._listeners:
                try:
                    listener([], self.rev)
                except Exception:
                    log.exception("commit listener failed")

    async def _reload(self) -> None:
        """Take the revision, compaction state and a new view from the engine
        after another brain process wrote to it. This process's watchers and
        leases have not seen that process's changes, unless resync is set:
        then it catches up through the revision log instead."""
        if self.resync is not None:
            try:
                await self.resync()
            except Exception as e:
                log.error("catching up with the engine failed (%s); the next commit tries again", e)
            return
        engine = self.engine
        try:
            # a latest read first: a snapshot may lag the engine's latest
            # reads (TiKV's is at the newest timestamp the engine has seen)
            await engine.get(K.META_REVISION)
            snap = engine.snapshot()
            raw, scheduled, finished = await snap.batch_get([K.META_REVISION, K.META_COMPACT_SCHEDULED, K.META_COMPACT_FINISHED])
        except EngineError as e:
            log.error("reloading the revision from the engine failed (%s); the next commit tries again", e)
            return
        old = self._view
        assert old is not None
        rev = K.decode_rev(raw, K.FRESH_REVISION)
        compact_rev = K.decode_rev(scheduled)
        finished_rev = K.decode_rev(finished)
        self._start_index(snap, rev)  # another process's revisions: learn afresh
        self._view = ReadView(snap, rev, compact_rev, self.index)
        self.compactor.finished = max(self.compactor.finished, finished_rev)
        if self.compactor.finished < compact_rev:
            self.compactor.start(compact_rev)
        log.warning("reloaded from the engine: revision %d -> %d, compact revision %d -> %d", old.rev, rev, old.compact_rev, compact_rev)
