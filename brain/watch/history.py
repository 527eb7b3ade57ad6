"""The recent events of the store, in memory, shared by every watcher.

Fed once per commit. A watcher that starts at a recent past revision, or
that fell behind, is caught up from here without touching the engine. The
history is bounded by an event count and by bytes; it forgets whole
revisions, oldest first. Everything from `start_rev` to the store's current
revision is present; below `start_rev` events come from the engine.
"""
from __future__ import annotations

from bisect import bisect_left
from operator import attrgetter
from typing import Sequence

from brain.watch.event import WatchEvent

DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_rev_of = attrgetter("rev")


class EventHistory:
    def __init__(self, next_rev: int, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: list[WatchEvent] = []
        self._head = 0  # events before this index are forgotten
        self.start_rev = next_rev  # the oldest revision held whole
        self.last_rev = next_rev - 1
        # figures for metrics
        self.events = 0
        self.bytes = 0

    def append(self, events: Sequence[WatchEvent], nbytes: int | None = None) -> None:
        """Add one commit's events (ascending revisions, all above last_rev).
        nbytes: their memory() summed, when the caller has (a big commit
        sums it a slice at a time)."""
        if not events:
            return
        if len(events) > self.max_events or (nbytes or 0) > self.max_bytes:
            # one commit bigger than the history: all of it would be
            # forgotten at once, the commit too; skip walking it
            self.skip_to(events[-1].rev)
            return
        self._events.extend(events)
        self.events += len(events)
        self.bytes += sum(e.memory() for e in events) if nbytes is None else nbytes
        self.last_rev = events[-1].rev
        if self.events > self.max_events or self.bytes > self.max_bytes:
            self._evict()

    def skip_to(self, rev: int) -> None:
        """The store is at rev with no events held for the revisions up to
        it: forget everything, start again after rev."""
        self._events = []
        self._head = 0
        self.events = 0
        self.bytes = 0
        self.start_rev = rev + 1
        self.last_rev = rev

    def _evict(self) -> None:
        evs = self._events
        i = self._head
        n = len(evs)
        freed = 0
        count = self.events
        while i < n and (count > self.max_events or self.bytes - freed > self.max_bytes):
            rev = evs[i].rev
            while i < n and evs[i].rev == rev:  # whole revisions only
                freed += evs[i].memory()
                count -= 1
                i += 1
        self.events = count
        self.bytes -= freed
        self.start_rev = evs[i].rev if i < n else self.last_rev + 1
        if i >= n:
            self._events = []
            self._head = 0
        elif i > 4096 and i * 2 > n:
            # drop the forgotten prefix now and then, not on every commit
            del evs[:i]
            self._head = 0
        else:
            self._head = i

    def read(self, lo: int, hi: int, max_revs: int, max_bytes: int) -> tuple[list[WatchEvent], int]:
        """Events of revisions lo..hi (lo >= start_rev), whole revisions, at
        most max_revs of them and about max_bytes (at least one revision).
        Returns the events and the last revision covered."""
        assert lo >= self.start_rev, (lo, self.start_rev)
        hi = min(hi, self.last_rev)
        if lo > hi:
            return [], hi
        evs = self._events
        i = bisect_left(evs, lo, lo=self._head, key=_rev_of)
        n = len(evs)
        out: list[WatchEvent] = []
        size = 0
        revs = 0
        last = lo - 1
        while i < n:
            e = evs[i]
            rev = e.rev
            if rev > hi:
                break
            if rev != last:
                if revs >= max_revs or (size >= max_bytes and revs):
                    break
                revs += 1
                last = rev
            out.append(e)
            size += e.size
            i += 1
        return out, (last if i < n and evs[i].rev <= hi else hi)
