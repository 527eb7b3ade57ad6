"""Physical compaction: prune history that no read at or above the compact
revision can see, in bounded batches, without stalling writes.

Compact(C) is logical first: the store persists C as the scheduled compact
revision and from then on refuses reads below C. The compactor then removes,
for every key changed at a revision in (finished, C], all versions at or
below C except the newest, and that one too if it is a tombstone (etcd's
keyIndex.compact rule). The revision log (keys.EVENTS) says which keys
changed where, so the work is proportional to what changed, not to the store.
It only deletes engine keys the writer never writes again (history at or below
C), so it runs beside the writer without coordination; each chunk is one
engine write and the loop yields between chunks.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from brain.mvcc import records as K
from engines.base import Engine, WriteBatch

log = logging.getLogger(__name__)

# Revisions handled per engine write: bounds the time one chunk holds the loop.
CHUNK_REVISIONS = 256
# seconds between progress lines of a long compaction
PROGRESS_EVERY_S = 5.0


class CompactedStore(Protocol):
    """What the compactor needs of the store it prunes (the MVCC store,
    which owns it: a Protocol keeps the import one way)."""

    engine: Engine
    sync: bool


class Compactor:
    def __init__(self, store: CompactedStore) -> None:
        self.store = store
        self.finished = 0  # highest revision physically compacted
        self.target = 0
        self._task: asyncio.Task | None = None
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self.removed_versions = 0  # for metrics
        self.runs = 0

    def start(self, rev: int) -> None:
        self.target = max(self.target, rev)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mvcc-compactor")

    async def wait(self, rev: int) -> None:
        """Return once everything at or below rev is physically compacted."""
        if self.finished >= rev:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((rev, fut))
        if self._task is None or self._task.done():
            self.start(rev)
        await fut

    def _wake(self, exc: BaseException | None = None) -> None:
        keep = []
        for rev, fut in self._waiters:
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            elif rev <= self.finished:
                fut.set_result(None)
            else:
                keep.append((rev, fut))
        self._waiters = keep

    async def _run(self) -> None:
        try:
            await self._compact_to_target()
        except asyncio.CancelledError:
            self._wake(asyncio.CancelledError())
            raise
        except Exception as e:
            log.exception("compaction failed")
            self._wake(e)

    async def _compact_to_target(self) -> None:
        engine = self.store.engine
        while self.finished < self.target:
            target = self.target
            start = max(self.finished, 1)
            log.info("compaction: %d -> %d", self.finished, target)
            loop = asyncio.get_running_loop()
            began = next_report = loop.time()
            removed_before = self.removed_versions
            lo = start
            while lo <= target:
                hi = min(lo + CHUNK_REVISIONS - 1, target)
                await self._compact_chunk(lo, hi, target)
                lo = hi + 1
                if loop.time() >= next_report + PROGRESS_EVERY_S:
                    # a long compaction says how far it has come
                    next_report = loop.time()
                    log.info("compaction to %d: %d of %d revisions done (%.0f%%), %d versions removed, %.0f s so far",
                             target, hi - start + 1, target - start + 1, 100 * (hi - start + 1) / (target - start + 1),
                             self.removed_versions - removed_before, next_report - began)
                await asyncio.sleep(0)
            wb = WriteBatch()
            wb.put(K.META_COMPACT_FINISHED, K.pack_rev(target))
            await engine.write(wb, sync=self.store.sync)
            self.finished = target
            self.runs += 1
            self._wake()
            log.info("compaction at %d finished", target)

    async def _compact_chunk(self, lo: int, hi: int, target: int) -> None:
        engine = self.store.engine
        snap = engine.snapshot()
        try:
            logs = await snap.scan(*K.events_range(lo, hi))
            touched = dict.fromkeys(k for _, k in K.decode_events(logs))
            wb = WriteBatch()
            for k in touched:
                versions = await snap.scan(*K.history_upto(k, target))
                if not versions:
                    continue
                doomed = [ek for ek, _ in versions[:-1]]
                last_key, last_val = versions[-1]
                if K.is_tombstone(last_val):
                    doomed.append(last_key)
                for ek in doomed:
                    wb.delete(ek)
                self.removed_versions += len(doomed)
            # the revision log below the compact revision is no longer needed
            for ek, _ in logs:
                if K.events_key_rev(ek) < target:
                    wb.delete(ek)
            if len(wb):
                await engine.write(wb, sync=False)
        finally:
            snap.close()

    async def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
