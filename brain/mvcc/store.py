"""The MVCC store: revisioned keys over an engine, with one group-committing writer.

Reads never queue: they use the current ReadView (the last committed engine
snapshot and its revision). Writes are functions of a WriteTxn, queued to one
writer task. The writer applies every queued request to one Batch, commits the
batch as one engine write (one fsync), then publishes a new view, tells the
commit listeners (watch, lease) what changed, and answers the requests. The
revision counter is allocated inside that loop, so it is gap-free, and a
request that changes nothing (a failed compare) consumes no revision.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable

from brain.errors import DiskFullError, NoLeaderError, RequestTimeoutError, StoppedError
from brain.mvcc.errors import CompactedError, FutureRevisionError, WriteFailedError
from brain.etcdpb import kv_pb2
from brain.mvcc import records as K
from brain.mvcc.compactor import Compactor
from brain.mvcc.key_index import KeyIndex
from brain.mvcc.keyset import ensure_keyset, read_keys
from brain.mvcc.kv import Change, CommitListener, WriteFence, WriteFn
from brain.mvcc.txn_read import ReadTxn
from brain.mvcc.txn_write import Batch, WriteTxn
from brain.mvcc.view import ReadView
from engines.base import CommitUnknownError, ConflictError, Engine, EngineError, EngineFullError, Snapshot, WriteBatch
from engines.features import inline_sync_hint

log = logging.getLogger(__name__)

_parse_kv = kv_pb2.KeyValue.FromString

# Upper bound of requests folded into one engine commit: keeps one batch's
# apply time (and so the latency of its first request) bounded.
MAX_BATCH = 512


class _Inbox:
    """The writer's queue: a deque and one waiter. asyncio.Queue does the
    same with more bookkeeping per item (and looks up the running loop,
    a getpid system call, on every wait)."""

    __slots__ = ("items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque = deque()
        self._loop = loop
        self._waiter: asyncio.Future | None = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def get(self) -> Any:
        while not self.items:
            self._waiter = self._loop.create_future()
            await self._waiter
        return self.items.popleft()


def _fail(items: list, error: Callable[[], Exception]) -> None:
    """Fail queued (fn, future) items, each with its own error."""
    for _, fut in items:
        if not fut.done():
            fut.set_exception(error())


def _fail_futures(pairs: list, error: Callable[[], Exception]) -> None:
    """Fail applied (future, result) pairs, each with its own error."""
    for fut, _ in pairs:
        if not fut.done():
            fut.set_exception(error())


def _bug(e: Exception) -> Callable[[], Exception]:
    """The error for the requests of a batch a bug failed (the bug itself is
    logged once where it is caught): not a timeout, which would send clients
    retrying into the same bug."""
    return lambda: WriteFailedError(f"{type(e).__name__}: {e}")


class MVCCStore:
    def __init__(self, engine: Engine, *, sync: bool = True) -> None:
        self.engine = engine
        self.sync = sync
        self._view: ReadView | None = None
        self._loop = asyncio.get_running_loop()
        self._queue = _Inbox(self._loop)
        self._writer: asyncio.Task | None = None
        self._listeners: list[CommitListener] = []
        self._closed = False
        # set when the store stopped without learning whether its last commit
        # applied: from then on it must not commit anything (see _settle)
        self._fenced = False
        # what the requests of a batch whose commit failed are told: set by
        # the failing commit, read by it and by the batches chained on it
        self._commit_failure: Callable[[], Exception] = RequestTimeoutError
        self.lease_exists: Callable[[int], bool] = lambda _id: False
        # set on a store that shares its engine with other brain processes
        # under an elected leader (brain/cluster): the fence gates commits,
        # and resync replaces _reload, feeding the revisions this process
        # missed to its listeners instead of only jumping over them
        self.fence: WriteFence | None = None
        self.resync: Callable[[], Awaitable[object]] | None = None
        # set while the store is a migration's target (brain/migrate): its
        # revisions are the source's, so every other write and compaction is
        # refused with this error (a new one each time) until the cut-over
        # clears it
        self.writes_refused: Callable[[], Exception] | None = None
        self.compactor = Compactor(self)
        # the keys live now and at recent revisions (key_index.py)
        self.index = KeyIndex(0)
        self._index_loader: asyncio.Task | None = None
        # figures for metrics
        self.batches = 0
        self.batched_requests = 0
        # etcd's raft proposals, counted per request through the writer:
        # committed once its batch is durable (or, like an etcd apply that
        # returns an error, once answered with its own error), failed when
        # its batch did not commit; pending is submitted minus both
        self.proposals_submitted = 0
        self.proposals_committed = 0
        self.proposals_failed = 0

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

    def _start_index(self, snap: Snapshot, rev: int) -> None:
        """A key index at rev that reads its keys in the background: the
        store serves at once (from the engine meanwhile), whatever its size."""
        index = self.index = KeyIndex(rev, None)

        async def load() -> None:
            try:
                keys, size = await read_keys(snap)
            except EngineError as e:
                log.error("cannot read the key set for the key index (%s); ranges are answered from the engine", e)
                return
            index.loaded(keys, size)
            log.info("key index loaded: %d keys at revision %d", len(keys), rev)

        if self._index_loader is not None:
            self._index_loader.cancel()
        self._index_loader = self._loop.create_task(load(), name="mvcc-key-index")

    async def index_loaded(self) -> None:
        """Return once the key index answers (it loads in the background
        after an open)."""
        task = self._index_loader
        if task is not None:
            await asyncio.shield(task)

    @property
    def keys_total(self) -> int:
        """Keys live at the current revision."""
        return len(self.index)

    @property
    def view(self) -> ReadView:
        return self._view  # type: ignore[return-value]

    @property
    def rev(self) -> int:
        return self._view.rev  # type: ignore[union-attr]

    @property
    def compact_rev(self) -> int:
        return self._view.compact_rev  # type: ignore[union-attr]

    def read_txn(self) -> ReadTxn:
        return ReadTxn(self.view)

    def writer_running(self) -> bool:
        writer = self._writer
        return writer is not None and not writer.done()

    def add_listener(self, fn: CommitListener) -> None:
        """fn(changes, rev) runs on the event loop after each durable commit."""
        self._listeners.append(fn)

    def remove_listener(self, fn: CommitListener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def follow(self, changes: list[Change], rev: int, snapshot: Snapshot, compact_rev: int) -> None:
        """Publish revisions another brain process committed (read back from
        the engine's revision log by brain/cluster/follower.py): the view
        moves to rev at snapshot, and the listeners see the changes as if
        this process had committed them. Revisions at or below the current
        one are already published and are left out."""
        view = self._view
        assert view is not None
        if rev <= view.rev:
            if compact_rev > view.compact_rev:  # compacted without a new revision
                self.index.forget_below(compact_rev)
                self._view = ReadView(view.snapshot, view.rev, compact_rev, self.index)
            return
        fresh = [c for c in changes if c.rev > view.rev]
        self.index.apply(fresh, rev)
        if compact_rev > view.compact_rev:
            self.index.forget_below(compact_rev)
        self._view = ReadView(snapshot, rev, max(compact_rev, view.compact_rev), self.index)
        for listener in self._listeners:
            try:
                listener(fresh, rev)
            except Exception:
                log.exception("commit listener failed")

    def _check_fence(self) -> None:
        fence = self.fence
        if fence is not None and not fence.admits_writes():
            raise NoLeaderError()

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

    # -- the writer ----------------------------------------------------------

    async def _write_loop(self) -> None:
        """Collect queued requests, apply them as one batch, commit it.

        Pipelined: while one batch's engine write (the fsync) is in flight,
        the next batch is applied on top of it. On an engine that applies
        writes in the order they are made (`ordered_writes`), the next
        batch's write is also handed to the engine at once, queued behind
        the one being synced, so the engine never waits for the event loop
        between two syncs; every such write is conditional on the revision
        key, so one queued behind a write that failed fails too. Batches are
        still published and answered in order, and a batch built on one whose
        commit fails is failed too."""
        q = self._queue
        depth = 2 if self.engine.features.ordered_writes else 1
        inflight: deque[asyncio.Task] = deque()
        pending: Batch | None = None
        loop = asyncio.get_running_loop()
        inline_now = inline_sync_hint(self.engine)
        while True:
            item = await q.get()
            stop = item is None
            items = [] if stop else [item]
            waiting = q.items
            while not stop and len(items) < MAX_BATCH and waiting:
                nxt = waiting.popleft()
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            if items:
                last = inflight[-1] if inflight else None
                chained = last is not None and not last.done()
                try:
                    applied = await self._apply(items, pending if chained else None)
                except Exception as e:  # never let the writer die: fail the batch instead
                    log.exception("applying a write batch failed")
                    self.proposals_failed += sum(1 for _, f in items if not f.done())
                    _fail(items, _bug(e))
                    applied = None
                # at most `depth` commits in flight: group commit needs the
                # requests that arrive meanwhile to gather into one batch
                while len(inflight) >= depth or (inflight and inflight[0].done()):
                    await inflight.popleft()
                if applied is not None and chained:
                    assert last is not None
                    if not last.done():
                        after = last  # its write goes first; this one waits on it
                    elif last.result():
                        after = None
                    else:
                        _fail(items, RequestTimeoutError)  # built on a batch that did not land
                        applied = None
                else:
                    after = None
                if applied is not None and not inflight and inline_now is not None and inline_now():
                    # the engine will sync on this thread, blocking: nothing
                    # to overlap, so commit and answer now rather than a
                    # task and a turn of the event loop later
                    await self._finish(*applied)
                    pending = None
                elif applied is not None:
                    inflight.append(loop.create_task(self._finish(*applied, after=after)))
                    pending = applied[0]
            if stop:
                while inflight:
                    await inflight.popleft()
                return

    async def _apply(self, items: list, pending: Batch | None) -> tuple[Batch, list, list] | None:
        batch = Batch.on(self._view, pending)  # type: ignore[arg-type]
        done: list[tuple[asyncio.Future, Any]] = []
        compactions: list[tuple[asyncio.Future, int]] = []
        lease_exists = self.lease_exists
        for fn, fut in items:
            if isinstance(fn, tuple):
                compactions.append((fut, fn[1]))
                continue
            txn = WriteTxn(batch, lease_exists)
            try:
                resp = await fn(txn)
            except Exception as e:  # the request fails alone; its changes are dropped
                if not fut.done():
                    fut.set_exception(e)
                self.proposals_committed += 1
                continue
            batch.absorb(txn)
            done.append((fut, resp))
        return batch, done, compactions

    async def _finish(self, batch: Batch, done: list, compactions: list, after: asyncio.Task | None = None) -> bool:
        """Write the batch to the engine, publish it, answer its requests.
        Returns whether the batch's changes (if any) are committed.

        after: the batch this one was built on, still in flight; this one's
        write goes to the engine now, but it is published only after that
        one, and fails if that one did."""
        ok = True
        changes = batch.own_changes
        try:
            commit: Awaitable[bool] | None = None
            if changes:
                wb = K.encode_batch(changes, batch.rev)
                commit = self._commit(wb, changes, changes[0].rev - 1, batch.rev, chained=after is not None)
                if after is not None:
                    commit = asyncio.ensure_future(commit)  # handed to the engine now
            if after is not None and not await after:
                landed = await commit if commit is not None else False
                if landed:  # cannot happen: the write was conditional on the batch before
                    log.error("revision %d committed on top of a batch that failed", batch.rev)
                _fail_futures(done, self._commit_failure)
                _fail_futures(compactions, self._commit_failure)
                self.proposals_failed += len(done) + len(compactions)
                return False
            if commit is not None:
                if await commit:
                    self._publish(batch, changes, len(done))
                else:
                    _fail_futures(done, self._commit_failure)
                    self.proposals_failed += len(done)
                    done = []
                    ok = False
            for fut, resp in done:
                if not fut.done():
                    fut.set_result(resp)
            for fut, rev in compactions:
                try:
                    await self._schedule_compaction(rev)
                except Exception as e:
                    if not fut.done():
                        fut.set_exception(e)
                else:
                    if not fut.done():
                        fut.set_result(self._view.rev)  # type: ignore[union-attr]
            self.proposals_committed += len(done) + len(compactions)
        except Exception as e:
            log.exception("finishing a write batch failed")
            unanswered = sum(1 for f, _ in done + compactions if not f.done())
            self.proposals_failed += unanswered
            self.proposals_committed += len(done) + len(compactions) - unanswered
            _fail_futures(done, _bug(e))
            _fail_futures(compactions, _bug(e))
            return False
        return ok

    async def _commit(self, wb: WriteBatch, changes: list[Change], prev: int, rev: int, chained: bool = False) -> bool:
        """Commit the engine writes of the batch taking the store from
        revision prev to rev; whether they are in the engine.

        An engine that several brain processes may open (`shared`, e.g. TiKV)
        takes the batch only if its revision key still holds prev: otherwise
        another process has written, this one's state is stale, and the batch
        fails while the store reloads. When the engine cannot tell whether a
        commit applied (CommitUnknownError), the revision key tells: rev if
        it did, prev if it did not. So no revision is skipped or used twice,
        and with one brain process per engine, a request that fails with
        RequestTimeoutError was not written."""
        if self._fenced:
            log.error("not committing revision %d: the outcome of an earlier commit is unknown", rev)
            self._commit_failure = RequestTimeoutError
            return False
        before = K.pack_rev(prev) if prev > 1 else None  # a fresh store has no revision key
        shared = self.engine.features.shared
        expect: list[tuple[bytes, bytes | None]] = [(K.META_REVISION, before)]
        fence = self.fence
        if fence is not None:
            if not fence.admits_writes():
                log.error("not committing revision %d: this process is not the leader", rev)
                self._commit_failure = NoLeaderError
                return False
            expect += fence.expectations()
        try:
            if shared or chained or fence is not None:
                await self.engine.commit_if(expect, wb, sync=self.sync)
            else:
                await self.engine.write(wb, sync=self.sync)
            return True
        except ConflictError as e:
            if not shared:
                # queued behind a write that failed (its batch fails too)
                log.error("engine commit of revision %d refused: the write before it did not land", rev)
                return False
            log.error("engine commit of revision %d refused: another brain process has written to this engine (%s)", rev, e)
            self._commit_failure = RequestTimeoutError
            await self._reload()
            return False
        except CommitUnknownError as e:
            log.warning("engine commit of revision %d: outcome unknown (%s); reading the revision back", rev, e)
            self._commit_failure = RequestTimeoutError
            return await self._settle(before, rev, changes)
        except EngineFullError as e:
            # nothing of the batch was written: the store stays at prev and
            # takes writes again once space is freed
            log.error("engine commit of revision %d failed, the disk is full: %s", rev, e)
            self._commit_failure = DiskFullError
            return False
        except EngineError as e:
            log.error("engine commit failed: %s", e)
            self._commit_failure = RequestTimeoutError
            return False

    async def _settle(self, before: bytes | None, rev: int, changes: list[Change]) -> bool:
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
                    wrote = {k: v for k, v in K.encode_batch(changes, rev).ops if v is not None}
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

    def _publish(self, batch: Batch, changes: list[Change], requests: int) -> None:
        view = self._view
        assert view is not None
        if batch.rev <= view.rev:
            # already published by follow(), read back from the engine
            # after a conflict: the same revisions, told once
            return
        self.index.apply(changes, batch.rev)
        self._view = ReadView(self.engine.snapshot(), batch.rev, view.compact_rev, self.index)
        self.batches += 1
        self.batched_requests += requests
        for listener in self._listeners:
            try:
                listener(changes, batch.rev)
            except Exception:
                log.exception("commit listener failed")

    async def _schedule_compaction(self, rev: int) -> None:
        view = self._view
        assert view is not None
        if rev <= view.compact_rev:
            raise CompactedError()
        if rev > view.rev:
            raise FutureRevisionError()
        wb = WriteBatch()
        wb.put(K.META_COMPACT_SCHEDULED, K.pack_rev(rev))
        fence = self.fence
        try:
            if fence is None:
                await self.engine.write(wb, sync=self.sync)
            else:
                # a deposed leader must not move the compact revision either
                self._check_fence()
                await self.engine.commit_if(fence.expectations(), wb, sync=self.sync)
        except ConflictError:
            raise NoLeaderError() from None
        except EngineFullError:
            raise DiskFullError() from None
        self._view = ReadView(view.snapshot, view.rev, rev, self.index)
        self.index.forget_below(rev)
        self.compactor.start(rev)

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
