"""A commit of very many changes (a DeleteRange of a whole prefix, a lease
revoked with every key attached to it) fanned out a bounded slice per turn
of the event loop, so that it never holds the loop for its whole length.

Per slice the changes become events, are matched against the synced
watchers and encoded once per key range and option variant; the encoded
bytes gather until the last slice. Only then does anything reach a watcher:
each gets the whole commit in one response (etcd splits one revision's
events across responses only for a watcher that asked for fragments, and
the outbox does that at send time), and the history gets the commit whole.
So a watcher canceled half way gets none of it, and one created half way
starts after it (its min_rev is past the store's revision, which is at
least this commit's).

The hub runs one of these at a time and queues later commits behind it;
while any is queued the hub is busy: streams hold catch-up and progress
until it is not (see stream.py), so no progress reports a revision whose
events have not been queued to its watchers.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol, Sequence

from brain.mvcc.kv import Change
from brain.watch.event import WatchEvent
from brain.watch.history import EventHistory
from brain.watch.response import select_events
from brain.watch.watcher import Watcher, WatcherState
from brain.watch.watcher_group import WatcherGroup, WatcherSet

# Changes turned into events, matched and encoded per turn of the loop.
FANOUT_SLICE = 1024


class FanoutHost(Protocol):
    """The hub as a big commit's fan-out uses it (brain/watch/hub.py)."""

    history: EventHistory
    synced: WatcherGroup


class SlicedDelivery:
    """Events of ascending revisions first..last, matched and encoded a
    slice at a time (add), then queued to their watchers all at once
    (deliver): one response per watcher, nothing sent before the end."""

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        # (range set, variant, the revision its watchers' events start at,
        # 0 for all) -> the encoded parts and their size
        self.encoded: dict[tuple[WatcherSet, int, int], tuple[list[bytes], list[int]]] = {}

    def since(self, w: Watcher) -> int:
        return w.min_rev if w.min_rev > self.first else 0

    def add(self, group: WatcherGroup, part: Sequence[WatchEvent], compact_rev: int) -> None:
        """Match and encode one slice of the events."""
        encoded = self.encoded
        for wset, matched in group.match(part).items():
            wanted = {(w.variant, self.since(w)) for w in wset.watchers if w.min_rev <= self.last}
            for variant, since in wanted:
                evs = [e for e in matched if e.rev >= since] if since else matched
                chunks, size = select_events(evs, variant, compact_rev)
                got = encoded.get((wset, variant, since))
                if got is None:
                    encoded[(wset, variant, since)] = (chunks, [size])
                else:
                    got[0].extend(chunks)
                    got[1][0] += size

    def deliver(self, header_rev: int, still: Callable[[Watcher], bool], force: bool = False) -> list[Watcher]:
        """Queue what was encoded to the watchers still (by still) in their
        sets; returns those whose stream is congested, which were sent
        nothing (none when force)."""
        behind: list[Watcher] = []
        for (wset, variant, since), (parts, size) in self.encoded.items():
            if not size[0]:
                continue
            for w in list(wset.watchers):
                if w.variant != variant or self.since(w) != since or not still(w):
                    continue  # another encoding's, or gone meanwhile
                box = w.stream.outbox
                if box.congested and not force:
                    behind.append(w)
                    continue
                box.put_events(w, header_rev, parts, size[0])
                w.quiet = False
        return behind


async def fan_out_in_slices(hub: FanoutHost, changes: Sequence[Change], rev: int, slice_size: int = FANOUT_SLICE) -> None:
    """Deliver one commit's changes (ascending revisions, up to rev) to the
    synced watchers they concern, at most slice_size changes per turn."""
    first = changes[0].rev
    history = hub.history
    # the commit's events for the history, until they are more than it holds
    events: list[WatchEvent] | None = []
    nbytes = 0
    delivery = SlicedDelivery(first, rev)
    for i in range(0, len(changes), slice_size):
        if i:
            await asyncio.sleep(0)
        part = [WatchEvent(c.rev, c.key, c.kv, c.prev, c.deleted) for c in changes[i:i + slice_size]]
        if events is not None:
            events += part
            nbytes += sum(e.memory() for e in part)
            if len(events) > history.max_events or nbytes > history.max_bytes:
                events = None  # the history would forget it whole: not kept meanwhile
        if hub.synced.size:
            # a live commit is above the compact revision: prev_kv applies
            delivery.add(hub.synced, part, 0)
    if events is None:
        history.skip_to(rev)
    else:
        history.append(events, nbytes)
    # a watcher created meanwhile starts after rev (see since and add)
    for w in delivery.deliver(rev, _still_synced):
        w.stream.fall_behind(w, first)


def _still_synced(w: Watcher) -> bool:
    return w.state is WatcherState.SYNCED
