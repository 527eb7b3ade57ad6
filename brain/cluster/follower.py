"""A follower's store follows the leader's commits through the engine.

The leader writes every revision's changed keys to the revision log
(`e<rev>`, brain/mvcc/records.py) in the same transaction as the revision
record. A follower reads the revision record at a fresh timestamp, and when
it is ahead of the store, reads the log and the versions from one snapshot
that holds them all, and hands them to MVCCStore.follow: the read view
moves, and the watch hub sees the revisions as if committed locally, each
once and in order.

A long gap (a follower that was paused, or cut off from the engine, while
the leader went on) is published in chunks of at most `chunk_revisions`
revisions or `chunk_bytes` bytes of events, each chunk a view and a listener
call of its own with a turn of the event loop after it: memory and the time
the loop is held stay bounded whatever the gap. Every chunk's view reads the
one snapshot the catch-up started with, at the chunk's revision (see
ReadView.snapshot_rev), so reads move forward chunk by chunk, never back,
and watchers see each revision once, in order.

`sync()` is the barrier of a linearizable read: it returns once the store
holds every revision committed before it was called. Reads that arrive
while one catch-up runs share the next one, so a burst of reads costs one
engine round trip, not one each.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from brain.tasks import cancel_and_wait
from brain.etcdpb import kv_pb2
from brain.mvcc import records as K
from brain.mvcc.kv import Change, FollowingKV
from brain.watch.event import WatchEvent
from brain.watch.replay import read_events
from engines.base import Engine, EngineError, Snapshot

log = logging.getLogger(__name__)

_parse_kv = kv_pb2.KeyValue.FromString

# How often an idle follower looks for the leader's new revisions: the
# delay a watcher on a follower sees at most, beyond the engine's latency.
DEFAULT_POLL_INTERVAL = 0.05
# Revisions per revision-log read while catching up: the first read of a
# round takes a few, later ones are sized to what is left of the chunk by
# the bytes per revision read so far, at most doubling each time.
CATCH_UP_FIRST_READ = 16
CATCH_UP_READ_REVISIONS = 100
# A catch-up publishes a chunk once it holds this many revisions or bytes.
CATCH_UP_CHUNK_REVISIONS = 1000
CATCH_UP_CHUNK_BYTES = 4 << 20


def to_change(event: WatchEvent) -> Change:
    kv = _parse_kv(event.kv)
    prev = _parse_kv(event.prev) if event.prev is not None else None
    return Change(
        rev=event.rev,
        key=event.key,
        kv=event.kv,
        prev=event.prev,
        deleted=event.deleted,
        lease=kv.lease,
        prev_lease=prev.lease if prev is not None else 0,
        prev_rev=prev.mod_revision if prev is not None else 0,
    )


class EngineFollower:
    def __init__(
        self,
        store: FollowingKV,
        engine: Engine,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        chunk_revisions: int = CATCH_UP_CHUNK_REVISIONS,
        chunk_bytes: int = CATCH_UP_CHUNK_BYTES,
    ) -> None:
        self.store = store
        self.engine = engine
        self.poll_interval = poll_interval
        self.chunk_revisions = chunk_revisions
        self.chunk_bytes = chunk_bytes
        self._lock = asyncio.Lock()
        self._joining: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        # for metrics and logs
        self.caught_up_revisions = 0
        self.caught_up_chunks = 0
        self.largest_chunk = 0  # revisions

    async def catch_up(self) -> int:
        """Bring the store up to the engine's revision; returns it."""
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        engine = self.engine
        store = self.store
        # a read at a fresh timestamp first: the snapshot after it is at
        # least as new, so it holds every revision committed before this call
        await engine.get(K.META_REVISION)
        snap = engine.snapshot()
        raw, scheduled = await snap.batch_get([K.META_REVISION, K.META_COMPACT_SCHEDULED])
        target = K.decode_rev(raw, K.FRESH_REVISION)
        compact_rev = K.decode_rev(scheduled)
        start = store.rev
        if target <= start:
            store.follow([], start, snap, compact_rev)  # the compact revision may have moved
            return start
        published = start
        chunks_before = self.caught_up_chunks
        largest = 0
        chunk: list[Change] = []
        size = 0
        lo = start + 1
        step = min(CATCH_UP_FIRST_READ, self.chunk_revisions)
        while lo <= target:
            events, covered = await read_events(snap, lo, target, step, with_prev=True)
            if store.rev != published:
                # the store moved meanwhile (a commit of its own): what was
                # read may overlap it, so let the next round read again
                log.info("catch-up from revision %d dropped: the store moved to %d meanwhile", published, store.rev)
                return store.rev
            read = 0
            for e in events:
                chunk.append(to_change(e))
                read += len(e.key) + len(e.kv) + len(e.prev or b"")
            size += read
            per_revision = read / (covered - lo + 1)
            lo = covered + 1
            full = covered - published >= self.chunk_revisions or size >= self.chunk_bytes
            # a chunk below the compact revision is not published on its
            # own: the snapshot may no longer hold the history to read it
            if covered < target and full and covered >= compact_rev:
                largest = max(largest, self._publish(chunk, published, covered, snap, compact_rev, target))
                published, chunk, size = covered, [], 0
                await asyncio.sleep(0)  # other tasks (readers, watch streams) between chunks
            # the next read fills what is left of the chunk, going by this
            # read's bytes per revision
            room = self.chunk_revisions - (covered - published)
            if per_revision > 0:
                room = min(room, int((self.chunk_bytes - size) / per_revision))
            step = max(1, min(CATCH_UP_READ_REVISIONS, 2 * step, room))
        largest = max(largest, self._publish(chunk, published, target, snap, compact_rev, target))
        chunks = self.caught_up_chunks - chunks_before
        if chunks > 1:
            log.info("caught up from revision %d to %d in %d chunks of at most %d revisions", start, target, chunks, largest)
        return target

    def _publish(self, chunk: list[Change], since: int, rev: int, snap: Snapshot, compact_rev: int, snapshot_rev: int) -> int:
        """One chunk's view and listener call; returns its revisions."""
        self.store.follow(chunk, rev, snap, compact_rev, snapshot_rev)
        self.caught_up_revisions += rev - since
        self.caught_up_chunks += 1
        self.largest_chunk = max(self.largest_chunk, rev - since)
        return rev - since

    async def sync(self) -> None:
        """The linearizable-read barrier (see the module docstring)."""
        round_ = self._joining
        if round_ is None:
            round_ = self._joining = asyncio.get_running_loop().create_task(self._round())
            # retrieved even when every reader waiting on it went away
            round_.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(round_)

    async def _round(self) -> None:
        async with self._lock:
            # whoever arrives from now on needs a round that starts later
            self._joining = None
            await self._catch_up()

    def start(self, active: Callable[[], bool]) -> None:
        """Poll the engine while active() (while this member follows)."""
        self._task = asyncio.get_running_loop().create_task(self._poll(active), name="follower-poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _poll(self, active: Callable[[], bool]) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.poll_interval)
            if not active():
                continue
            try:
                async with self._lock:
                    if active():
                        await self._catch_up()
                if failing:
                    log.info("following the engine again at revision %d", self.store.rev)
                failing = False
            except asyncio.CancelledError:
                raise
            except EngineError as e:
                if not failing:
                    log.warning("cannot follow the engine's revisions (%s); retrying", e)
                failing = True
            except Exception:
                log.exception("following the engine's revisions failed")
                failing = True
