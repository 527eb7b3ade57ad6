"""Delivering matched events to watchers: the hot path of watch.

For each matched key range the events are encoded once per option variant
and the same bytes go to every watcher of that range and variant; the work
per watcher is a dict lookup and an append to its stream's outbox.
"""
from __future__ import annotations

from brain.watch.response import select_events
from brain.watch.watcher import Watcher
from brain.watch.watcher_group import Matches


def fan_out(matches: Matches, rev: int, compact_rev: int, *, force: bool = False) -> list[Watcher]:
    """Queue each set's events (ascending revisions) for its watchers, with
    header revision rev. A watcher is sent only events at or above its
    min_rev. Returns the watchers whose stream is congested and so were
    sent nothing (none when force: catching up queues regardless)."""
    behind: list[Watcher] = []
    for wset, evs in matches.items():
        first = evs[0].rev
        shared: dict[int, tuple[list[bytes], int]] = {}
        for w in wset.watchers:
            box = w.stream.outbox
            if box.congested and not force:
                behind.append(w)
                continue
            if w.min_rev > first:
                # started in the future, or caught up past part of these
                min_rev = w.min_rev
                chunks, size = select_events([e for e in evs if e.rev >= min_rev], w.variant, compact_rev)
            else:
                sel = shared.get(w.variant)
                if sel is None:
                    sel = shared[w.variant] = select_events(evs, w.variant, compact_rev)
                chunks, size = sel
            if size:
                box.put_events(w, rev, chunks, size)
                w.quiet = False
    return behind
