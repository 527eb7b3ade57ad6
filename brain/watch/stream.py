"""The watches of one gRPC Watch stream (etcd's serverWatchStream and
watchStream): create, cancel and progress requests, watch ids, the periodic
progress notifications, and catching up the stream's watchers that are
behind the store.

A watcher that is behind (it started at a past revision, or its stream was
too slow to take the events of a commit) is unsynced: it is out of the hub's
group and its stream's catch-up task replays the missed revisions to it,
from the memory history or, for revisions history has forgotten, from the
engine, in bounded chunks paced by the stream's sender. The moment a watcher
has reached the store's revision it is put back in the hub's group; both
happen in one step of the event loop, so no commit falls between them.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

from brain.etcdpb import rpc_pb2
from brain.mvcc.kv import KV
from brain.watch.big_commit import FANOUT_SLICE, SlicedDelivery
from brain.watch.fanout import fan_out
from brain.watch.history import EventHistory
from brain.watch.outbox import Outbox
from brain.watch.replay import read_events
from brain.watch.response import ResponseEncoder
from brain.watch.watcher import PREV_KV, Watcher, WatcherState, variant_of
from brain.watch.watcher_group import WatcherGroup

log = logging.getLogger(__name__)

# etcd's messages for a create it refuses (mvcc/watcher.go)
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"
# the reason etcd gives a watch created at a negative revision
CANCEL_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
# the id of responses that belong to no one watcher (clientv3.InvalidWatchID)
INVALID_WATCH_ID = -1

# Catching up goes in chunks of at most this many revisions (etcd's
# watchBatchMaxRevs) and about this many bytes of events.
CATCH_UP_REVS = 1000
CATCH_UP_BYTES = 1024 * 1024

_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE
SYNCED, UNSYNCED, COMPACTED, CANCELED = (
    WatcherState.SYNCED, WatcherState.UNSYNCED, WatcherState.COMPACTED, WatcherState.CANCELED,
)


class StreamHost(Protocol):
    """The hub a stream belongs to (brain/watch/hub.py), as the stream uses
    it: its encoder, history and store, the synced group and the counts a
    stream moves its watchers between. A Protocol keeps the import one way
    (the hub makes streams)."""

    store: KV
    encoder: ResponseEncoder
    history: EventHistory
    synced: WatcherGroup
    streams: dict[int, WatchStream]
    progress_interval: float
    high_water: int
    low_water: int
    watchers: int
    unsynced: int
    engine_reads: int

    @property
    def busy(self) -> bool: ...

    async def wait_idle(self) -> None: ...


class WatchStream:
    def __init__(self, hub: StreamHost, stream_id: int) -> None:
        self.hub = hub
        self.id = stream_id
        self.outbox = Outbox(hub.encoder, hub.high_water, hub.low_water)
        self.watchers: dict[int, Watcher] = {}  # every id in use, compacted ones too
        self.unsynced: dict[Watcher, None] = {}
        self.next_id = 0
        self.closed = False
        self.fell_behind = 0  # times a commit found this stream congested
        self._catch_up_task: asyncio.Task | None = None
        self._progress_timer: asyncio.TimerHandle | None = None
        if hub.progress_interval > 0:
            # as etcd: one interval per stream, plus up to 10% jitter so that
            # streams opened together do not all report at the same moment
            interval = hub.progress_interval * (1 + random.random() / 10)
            self._progress_interval = interval
            self._progress_timer = asyncio.get_running_loop().call_later(interval, self._progress_tick)

    # -- requests ------------------------------------------------------------

    def handle(self, req: rpc_pb2.WatchRequest) -> None:
        kind = req.WhichOneof("request_union")
        if kind == "create_request":
            self.create(req.create_request)
        elif kind == "cancel_request":
            self.cancel(req.cancel_request.watch_id)
        elif kind == "progress_request":
            self.request_progress()
        # anything else is ignored, as etcd does

    def create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        if self.closed:
            return
        hub = self.hub
        store = hub.store
        box = self.outbox
        enc = hub.encoder
        key = req.key or b"\x00"  # "\x00" is the smallest key
        if req.start_revision < 0:
            box.put_control(enc.control(INVALID_WATCH_ID, rev=store.rev, created=True, canceled=True,
                                        cancel_reason=CANCEL_COMPACTED))
            return
        end: bytes | None = req.range_end or None
        if end == b"\x00":
            end = b""  # every key >= key
        elif end is not None and key >= end:
            box.put_control(enc.control(INVALID_WATCH_ID, rev=store.rev, created=True, canceled=True,
                                        cancel_reason=ERR_EMPTY_RANGE))
            return
        wid = req.watch_id
        if wid == 0:  # clientv3.AutoWatchID: the next free id
            while self.next_id in self.watchers:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        elif wid in self.watchers:
            box.put_control(enc.control(INVALID_WATCH_ID, rev=store.rev, created=True, canceled=True,
                                        cancel_reason=ERR_DUPLICATE_ID))
            return
        filters = set(req.filters)
        variant = variant_of(req.prev_kv, _NOPUT in filters, _NODELETE in filters, req.fragment)
        cur = store.rev
        start = req.start_revision
        w = Watcher(wid, key, end, self, start, start, variant, req.progress_notify)
        self.watchers[wid] = w
        # created goes out before anything the watcher is sent
        box.put_control(enc.control(wid, rev=cur, created=True))
        hub.watchers += 1
        if start == 0 or start > cur:
            w.min_rev = max(cur + 1, start)
            w.state = SYNCED
            hub.synced.add(w)
        else:
            w.state = UNSYNCED
            self.unsynced[w] = None
            hub.unsynced += 1
            self._schedule_catch_up()

    def cancel(self, wid: int) -> None:
        w = self.watchers.pop(wid, None)
        if w is None:
            return  # etcd answers an unknown id with nothing
        self._drop(w)
        self.outbox.put_control(self.hub.encoder.control(wid, rev=self.hub.store.rev, canceled=True))

    def request_progress(self) -> None:
        """etcd 3.5's RequestProgressAll: one progress response (watch id -1)
        at the current revision, queued behind every event already queued,
        only if every watcher of the stream is synced; otherwise (or with no
        watchers) nothing, and the client asks again."""
        if not self.watchers or self.outbox.congested or self.hub.busy:
            return  # (busy: the store's revision is not yet fanned out)
        cur = self.hub.store.rev
        for w in self.watchers.values():
            if w.state is not SYNCED or cur < w.start_rev:
                return
        self.outbox.put_control(self.hub.encoder.control(INVALID_WATCH_ID, rev=cur))

    def _progress_tick(self) -> None:
        """Periodic progress: each progress_notify watcher that is synced and
        was sent no events since the last tick gets its revision."""
        if self.closed:
            return
        if self.hub.busy:  # the store's revision is not yet fanned out: next tick
            self._progress_timer = asyncio.get_running_loop().call_later(self._progress_interval, self._progress_tick)
            return
        cur = self.hub.store.rev
        box = self.outbox
        enc = self.hub.encoder
        for w in self.watchers.values():
            if not w.progress_notify:
                continue
            if w.quiet and w.state is SYNCED and cur >= w.start_rev and not box.congested:
                box.put_control(enc.control(w.id, rev=cur))
            w.quiet = True
        self._progress_timer = asyncio.get_running_loop().call_later(self._progress_interval, self._progress_tick)

    # -- state changes ---------------------------------------------------------

    def _drop(self, w: Watcher) -> None:
        hub = self.hub
        if w.state is SYNCED:
            hub.synced.remove(w)
            hub.watchers -= 1
        elif w.state is UNSYNCED:
            del self.unsynced[w]
            hub.unsynced -= 1
            hub.watchers -= 1
        w.state = CANCELED

    def fall_behind(self, w: Watcher, from_rev: int) -> None:
        """The stream could not take w's events from from_rev on: catch w up later."""
        if w.state is not SYNCED:
            return
        hub = self.hub
        hub.synced.remove(w)
        w.min_rev = max(w.min_rev, from_rev)
        w.state = UNSYNCED
        self.unsynced[w] = None
        hub.unsynced += 1
        if not self.fell_behind:
            log.info("watch stream %d is not keeping up; its watchers continue from history", self.id)
        self.fell_behind += 1
        self._schedule_catch_up()

    def _resync(self, cur: int) -> None:
        """Back into the hub's group: every unsynced watcher past revision cur."""
        hub = self.hub
        for w in [w for w in self.unsynced if w.min_rev > cur]:
            del self.unsynced[w]
            hub.unsynced -= 1
            w.state = SYNCED
            hub.synced.add(w)

    def _expire_compacted(self, compact_rev: int) -> None:
        """etcd's answer to a watcher behind the compact revision: one
        response {watch_id, compact_revision, canceled} with header revision
        0, and nothing more; its id stays taken until it is canceled."""
        hub = self.hub
        for w in [w for w in self.unsynced if w.min_rev < compact_rev]:
            del self.unsynced[w]
            hub.unsynced -= 1
            hub.watchers -= 1
            w.state = COMPACTED
            self.outbox.put_control(hub.encoder.control(w.id, canceled=True, compact_revision=compact_rev))

    # -- catching up -----------------------------------------------------------

    def _schedule_catch_up(self) -> None:
        t = self._catch_up_task
        if (t is None or t.done()) and not self.closed:
            self._catch_up_task = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        try:
            await self._catch_up_loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catching up watch stream %d failed; closing its outbox", self.id)
            self.close()

    async def _catch_up_loop(self) -> None:
        hub = self.hub
        store = hub.store
        box = self.outbox
        while self.unsynced and not self.closed:
            if box.queued_bytes > box.low_water:
                await box.wait_drained()  # paced by the client
                continue
            if hub.busy:
                # a big commit is being fanned out: history lacks it and
                # a watcher put back among the synced half way through it
                # would get only its rest
                await hub.wait_idle()
                continue
            self._expire_compacted(store.compact_rev)
            if not self.unsynced:
                return
            cur = store.rev
            lo = min(w.min_rev for w in self.unsynced)
            if lo > cur:
                self._resync(cur)
                return
            history = hub.history
            if lo >= history.start_rev:
                events, hi = history.read(lo, cur, CATCH_UP_REVS, CATCH_UP_BYTES)
            else:
                with_prev = any(w.variant & PREV_KV for w in self.unsynced)
                view = store.view
                events, hi = await read_events(
                    view.snapshot, lo, min(history.start_rev - 1, view.rev), CATCH_UP_REVS, with_prev
                )
                hub.engine_reads += 1
                if self.closed:
                    return
            await self._deliver(events, hi)
            if self.closed:
                return
            if not hub.busy:
                self._resync(store.rev)
            await asyncio.sleep(0)  # let commits and other streams in between chunks

    async def _deliver(self, events: list, hi: int) -> None:
        """Send revisions up to hi to the unsynced watchers that lack them.
        Many events (a big revision) are matched and encoded a slice per
        turn of the loop, and queued to each watcher whole at the end."""
        targets = [w for w in self.unsynced if w.min_rev <= hi]
        if events:
            group = WatcherGroup()
            for w in targets:
                group.add(w)
            store = self.hub.store
            if len(events) <= FANOUT_SLICE:
                matches = group.match(events)
                if matches:
                    fan_out(matches, store.rev, store.compact_rev, force=True)
            else:
                delivery = SlicedDelivery(events[0].rev, hi)
                for i in range(0, len(events), FANOUT_SLICE):
                    if i:
                        await asyncio.sleep(0)
                        if self.closed:
                            return
                    delivery.add(group, events[i:i + FANOUT_SLICE], store.compact_rev)
                # (a watcher canceled meanwhile is no longer unsynced)
                delivery.deliver(store.rev, self.unsynced.__contains__, force=True)
        for w in targets:
            w.min_rev = hi + 1

    # -- the end ---------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.watchers.values():
            self._drop(w)
        self.watchers.clear()
        self.outbox.close()
        if self._progress_timer is not None:
            self._progress_timer.cancel()
        t = self._catch_up_task
        if t is not None and not t.done() and t is not asyncio.current_task():
            t.cancel()
        self.hub.streams.pop(self.id, None)
