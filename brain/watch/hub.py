"""The watch hub: every commit, once, to every watcher it concerns.

The store calls `on_commit` after each durable group commit (on the event
loop, before anyone else can see the new revision). The hub turns the
commit's changes into events once, appends them to the shared history, finds
the synced watchers whose ranges they fall in, and queues the encoded events
on those watchers' streams. It never waits: a stream too slow to take them
has its watchers moved aside and caught up later (see stream.py), so writers
and other watchers never wait for a slow client.

A commit of more than FANOUT_SLICE changes is fanned out a slice per turn
of the loop instead (big_commit.py); commits arriving meanwhile queue
behind it and the hub is `busy` until the queue is empty.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Sequence

from brain.mvcc.kv import KV, Change
from brain.watch.big_commit import FANOUT_SLICE, fan_out_in_slices
from brain.watch.event import WatchEvent
from brain.watch.fanout import fan_out
from brain.watch.history import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, EventHistory
from brain.watch.outbox import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER
from brain.watch.response import HeaderSource, ResponseEncoder
from brain.watch.stream import WatchStream
from brain.watch.watcher_group import WatcherGroup

log = logging.getLogger(__name__)

# etcd's minimum progress notify interval (minWatchProgressInterval)
MIN_PROGRESS_INTERVAL = 0.1
# etcd's default fragment size: max request bytes (1.5 MiB) + gRPC overhead
DEFAULT_FRAGMENT_LIMIT = 2 * 1024 * 1024


class WatchHub:
    def __init__(
        self,
        store: KV,
        header: HeaderSource,
        *,
        progress_interval: float = 600.0,
        fragment_limit: int = DEFAULT_FRAGMENT_LIMIT,
        history_events: int = DEFAULT_MAX_EVENTS,
        history_bytes: int = DEFAULT_MAX_BYTES,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        fanout_slice: int = FANOUT_SLICE,
    ) -> None:
        self.store = store
        self.encoder = ResponseEncoder(header, fragment_limit)
        self.history = EventHistory(store.rev + 1, history_events, history_bytes)
        self.synced = WatcherGroup()
        self.streams: dict[int, WatchStream] = {}
        if 0 < progress_interval < MIN_PROGRESS_INTERVAL:
            progress_interval = MIN_PROGRESS_INTERVAL
        self.progress_interval = progress_interval
        self.high_water = high_water
        self.low_water = low_water
        self._stream_ids = itertools.count(1)
        self.fanout_slice = fanout_slice
        # commits not yet fanned out, the one being fanned out in slices first
        self._queued: deque[tuple[Sequence[Change], int]] = deque()
        self._fanning: asyncio.Task | None = None
        self._idle: asyncio.Future[None] | None = None  # someone waits for not busy
        # figures for metrics
        self.watchers = 0  # active (synced + unsynced) watchers
        self.unsynced = 0
        self.engine_reads = 0  # catch-up chunks read from the engine
        store.add_listener(self.on_commit)

    def open_stream(self) -> WatchStream:
        s = WatchStream(self, next(self._stream_ids))
        self.streams[s.id] = s
        return s

    @property
    def busy(self) -> bool:
        """Commits are waiting to be (or being) fanned out: the watchers'
        state lags the store's revision until they are."""
        return bool(self._queued)

    async def wait_idle(self) -> None:
        while self._queued:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    def on_commit(self, changes: Sequence[Change], rev: int) -> None:
        if self._queued or len(changes) > self.fanout_slice:
            self._queued.append((changes, rev))
            if self._fanning is None:
                self._fanning = asyncio.get_running_loop().create_task(self._fan_out_queued(), name="watch-big-commit")
            return
        self._fan_out(changes, rev)

    async def _fan_out_queued(self) -> None:
        queued = self._queued
        try:
            while queued:
                changes, rev = queued[0]
                try:
                    if len(changes) > self.fanout_slice:
                        await fan_out_in_slices(self, changes, rev, self.fanout_slice)
                    else:
                        self._fan_out(changes, rev)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("fanning out revision %d failed", rev)
                queued.popleft()
        finally:
            self._fanning = None
            queued.clear()  # (only not empty when closing)
            idle, self._idle = self._idle, None
            if idle is not None and not idle.done():
                idle.set_result(None)

    def _fan_out(self, changes: Sequence[Change], rev: int) -> None:
        events = [WatchEvent(c.rev, c.key, c.kv, c.prev, c.deleted) for c in changes]
        if not events and rev > self.history.last_rev:
            self._skip_to(rev)
            return
        self.history.append(events)
        synced = self.synced
        if not synced.size or not events:
            return
        matches = synced.match(events)
        if not matches:
            return
        # a live commit is above the compact revision: prev_kv always applies
        behind = fan_out(matches, rev, 0)
        if behind:
            first = events[0].rev
            for w in behind:
                w.stream.fall_behind(w, first)

    def _skip_to(self, rev: int) -> None:
        """The store moved to rev with no events for the revisions between (a
        migration's copied keys, store.adopt_engine_state): no synced watcher
        can be told those revisions. Each is caught up instead, which answers
        a watcher below the compact revision as compacted, as etcd does."""
        self.history.skip_to(rev)
        for w in list(self.synced.watchers()):
            if w.min_rev <= rev:
                w.stream.fall_behind(w, w.min_rev)

    def gauges(self) -> list[tuple[str, str, float]]:
        h = self.history
        return [
            ("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", len(self.streams)),
            ("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", self.watchers),
            ("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", self.unsynced),
            ("brain_watch_history_events", "Events held in the watch history.", h.events),
            ("brain_watch_history_bytes", "Approximate bytes held by the watch history.", h.bytes),
            ("brain_watch_history_start_revision", "Oldest revision the watch history holds.", h.start_rev),
        ]

    def close(self) -> None:
        for s in list(self.streams.values()):
            s.close()
        if self._fanning is not None:
            self._fanning.cancel()
