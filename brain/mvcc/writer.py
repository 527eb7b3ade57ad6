"""The MVCC store's one writer: queued write requests applied in groups to
one Batch, each group committed as one engine write (engine_commit.py),
then published as the new read view and told to the commit listeners, and
the requests answered. Compactions are scheduled in the same order.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from brain.errors import DiskFullError, NoLeaderError, RequestTimeoutError
from brain.mvcc.errors import CompactedError, FutureRevisionError, WriteFailedError
from brain.mvcc import records as K
from brain.mvcc.copy_ahead import CopyAhead
from brain.mvcc.engine_commit import EngineCommit
from brain.mvcc.kv import Change
from brain.mvcc.txn_write import Batch, WriteTxn
from brain.mvcc.view import ReadView
from engines.base import ConflictError, EngineFullError, Snapshot, WriteBatch
from engines.features import inline_sync_hint

log = logging.getLogger(__name__)

# Upper bound of requests folded into one engine commit: keeps one batch's
# apply time (and so the latency of its first request) bounded.
MAX_BATCH = 512
# A batch of more changes than this is encoded in slices of ENCODE_SLICE,
# one per turn of the event loop, and committed by a task. A change makes at
# most 5 engine ops, so a batch encoded at once stays within the ops that
# the LevelDB engine writes inline (its INLINE_MAX_OPS).
ENCODE_AT_ONCE = 2048
ENCODE_SLICE = 1024


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


async def _encode_in_slices(changes: list[Change], rev: int, copies: CopyAhead | None = None) -> WriteBatch:
    """encode_batch for a batch of very many changes (one DeleteRange or
    lease revoke of a large range), a slice per turn of the event loop. Run
    while the batch is applied, before the next one is built, so the engine
    still takes the batches in revision order. With copies, the copies of
    committed versions are written ahead of the batch (copy_ahead.py), and
    this returns once they are in the engine."""
    wb = WriteBatch()
    by_rev: dict[int, list[bytes]] = {}
    committed = copies.committed if copies is not None else 0
    for i in range(0, len(changes), ENCODE_SLICE):
        K.encode_changes(wb, by_rev, changes[i : i + ENCODE_SLICE], copies.buffer if copies is not None else None, committed)
        if copies is not None:
            copies.send_full()
        await asyncio.sleep(0)
    key_lists = {}
    for r, keys in by_rev.items():
        encoded = key_lists[r] = bytearray()
        for i in range(0, len(keys), ENCODE_SLICE):
            encoded += K.encode_key_list(keys[i : i + ENCODE_SLICE])
            await asyncio.sleep(0)
    K.end_batch_encoded(wb, key_lists, rev)
    if copies is not None:
        failed = await copies.finish()
        wb.ops[:0] = failed
    return wb


@dataclass(slots=True)
class _OpenBatch:
    """A batch being applied and not yet handed to the engine: it takes
    every request that arrives while the commit before it is in flight."""

    batch: Batch
    # the commit of the batch this one is built on, in flight when it opened
    follows: asyncio.Task | None
    items: list = field(default_factory=list)
    done: list = field(default_factory=list)
    compactions: list = field(default_factory=list)


class GroupCommitWriter(EngineCommit):
    # -- the writer ----------------------------------------------------------

    async def _write_loop(self) -> None:
        """Apply queued requests to one open batch, commit it, repeat.

        Group commit: while one batch's engine write (the fsync) is in
        flight, the next batch stays open and every request that arrives
        meanwhile is applied to it; it is sealed and handed to the engine
        once that write is done. A request thus waits for at most the one
        commit in flight before its own, and a commit carries everything
        that arrived during the one before. A batch that fills (MAX_BATCH
        requests) is sealed at once: on an engine that applies writes in the
        order they are made (`ordered_writes`), its write is handed to the
        engine queued behind the one being synced, conditional on the
        revision key, so it fails if that one did. Batches are published and
        answered in order, and a batch built on one whose commit fails is
        failed too."""
        q = self._queue
        depth = 2 if self.pipelined is not None else 1
        inflight: deque[asyncio.Task] = deque()
        pending: Batch | None = None  # the last batch handed to the engine
        open_: _OpenBatch | None = None
        stop = False
        loop = asyncio.get_running_loop()
        inline_now = inline_sync_hint(self.engine)
        wake = q.wake
        while True:
            if not stop:
                await q.wait()
            items: list = []
            waiting = q.items
            room = MAX_BATCH - (len(open_.items) if open_ is not None else 0)
            while not stop and len(items) < room and waiting:
                nxt = waiting.popleft()
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            while inflight and inflight[0].done():
                inflight.popleft()
            if items:
                if open_ is None:
                    last = inflight[-1] if inflight else None
                    open_ = _OpenBatch(Batch.on(self._view, pending if last is not None else None), last)  # type: ignore[arg-type]
                    if not self.engine.features.shared:
                        open_.batch.copy_writer = self._write_copies
                try:
                    await self._apply(open_, items)
                except Exception as e:  # never let the writer die: fail the batch instead
                    log.exception("applying a write batch failed")
                    self.proposals_failed += sum(1 for _, f in open_.items if not f.done())
                    _fail(open_.items, _bug(e))
                    open_ = None
            if open_ is not None and (stop or len(open_.items) >= MAX_BATCH or not inflight or inflight[-1].done()):
                sealed, open_ = open_, None
                encoded = None
                big = len(sealed.batch.changes) - sealed.batch.own_from > ENCODE_AT_ONCE  # without copying own_changes
                # a big DeleteRange may have started copies ahead already
                copies = sealed.batch.copy_ahead() if big else sealed.batch.copies
                if big or copies is not None:
                    encoded = await _encode_in_slices(sealed.batch.own_changes, sealed.batch.rev, copies)
                while len(inflight) >= depth or (inflight and inflight[0].done()):
                    await inflight.popleft()
                last = sealed.follows
                after = None
                if last is not None and not last.done():
                    after = last  # its write goes first; this one waits on it
                elif last is not None and not last.result():
                    _fail(sealed.items, RequestTimeoutError)  # built on a batch that did not land
                    continue
                applied = (sealed.batch, sealed.done, sealed.compactions, encoded)
                if not inflight and encoded is None and inline_now is not None and inline_now():
                    # the engine will sync on this thread, blocking: nothing
                    # to overlap, so commit and answer now rather than a
                    # task and a turn of the event loop later (not a batch
                    # so big it was encoded in slices: engines may write
                    # those off the loop)
                    await self._finish(*applied)
                    pending = None
                else:
                    task = loop.create_task(self._finish(*applied, after=after))
                    task.add_done_callback(lambda _: wake())  # the open batch's turn
                    inflight.append(task)
                    pending = sealed.batch
            if stop and open_ is None:
                while inflight:
                    await inflight.popleft()
                return

    async def _write_copies(self, chunk: WriteBatch) -> None:
        """A batch's copies written ahead of it (copy_ahead.py)."""
        await self.engine.write(chunk, sync=self.sync)

    async def _apply(self, open_: _OpenBatch, items: list) -> None:
        batch = open_.batch
        lease_exists = self.lease_exists
        for item in items:
            open_.items.append(item)
            fn, fut = item
            if isinstance(fn, tuple):
                open_.compactions.append((fut, fn[1]))
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
            open_.done.append((fut, resp))

    async def _finish(
        self, batch: Batch, done: list, compactions: list, encoded: WriteBatch | None, after: asyncio.Task | None = None,
    ) -> bool:
        """Write the batch to the engine, publish it, answer its requests.
        Returns whether the batch's changes (if any) are committed.

        after: the batch this one was built on, still in flight; this one's
        write goes to the engine now, but it is published only after that
        one, and fails if that one did."""
        ok = True
        changes = batch.own_changes
        try:
            commit: Awaitable[Snapshot | None] | None = None
            if changes:
                wb = encoded if encoded is not None else K.encode_batch(changes, batch.rev)
                commit = self._commit(wb, changes, changes[0].rev - 1, batch.rev, chained=after is not None)
                if after is not None:
                    commit = asyncio.ensure_future(commit)  # handed to the engine now
            if after is not None and not await after:
                landed = await commit if commit is not None else None
                if landed is not None:  # cannot happen: the write was conditional on the batch before
                    log.error("revision %d committed on top of a batch that failed", batch.rev)
                _fail_futures(done, self._commit_failure)
                _fail_futures(compactions, self._commit_failure)
                self.proposals_failed += len(done) + len(compactions)
                return False
            if commit is not None:
                snap = await commit
                if snap is not None:
                    self._publish(batch, changes, len(done), snap)
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

    def _publish(self, batch: Batch, changes: list[Change], requests: int, snap: Snapshot) -> None:
        view = self._view
        assert view is not None
        if batch.rev <= view.rev:
            # already published by follow(), read back from the engine
            # after a conflict: the same revisions, told once
            return
        self._index_apply(changes, batch.rev)
        self._view = ReadView(snap, batch.rev, view.compact_rev, self.index)
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
                async with self.fence_lock:
                    await self.engine.commit_if(fence.expectations(), wb, sync=self.sync)
        except ConflictError:
            raise NoLeaderError() from None
        except EngineFullError:
            raise DiskFullError() from None
        self._view = ReadView(view.snapshot, view.rev, rev, self.index)
        self.index.forget_below(rev)
        self.compactor.start(rev)
