"""Watchers indexed by key range, so that matching a commit's events costs
work in proportion to the watchers that match, not to all watchers.

Watchers with the same range share one WatcherSet (kube-apiserver opens many
watches on the same few prefixes). Single-key sets are found with one dict
lookup. Range sets (prefixes, [key, end), key and above) are found through a
segment index: the distinct range bounds, sorted, cut the keyspace into
segments, and each segment lists the range sets that cover it, so one bisect
per event finds them all. The index is rebuilt lazily, at the first match
after the set of distinct ranges changed; adding or removing a watcher to an
existing range does not touch it.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Iterable, Sequence

from brain.watch.event import WatchEvent
from brain.watch.watcher import Watcher


class WatcherSet:
    """The watchers of one key range."""

    __slots__ = ("key", "end", "watchers")

    def __init__(self, key: bytes, end: bytes | None) -> None:
        self.key = key
        self.end = end
        self.watchers: dict[Watcher, None] = {}

    def __repr__(self) -> str:
        return f"WatcherSet({self.key!r}, {self.end!r}, {len(self.watchers)} watchers)"


Matches = dict[WatcherSet, list[WatchEvent]]


class _SegmentIndex:
    __slots__ = ("bounds", "covers")

    def __init__(self, ranges: Iterable[WatcherSet]) -> None:
        ranges = list(ranges)
        bounds = sorted({s.key for s in ranges} | {s.end for s in ranges if s.end})
        pos = {b: i for i, b in enumerate(bounds)}
        covers: list[list[WatcherSet]] = [[] for _ in bounds]
        for s in ranges:
            stop = pos[s.end] if s.end else len(bounds)
            for i in range(pos[s.key], stop):
                covers[i].append(s)
        self.bounds = bounds
        self.covers = [tuple(c) for c in covers]


class WatcherGroup:
    def __init__(self) -> None:
        self.keys: dict[bytes, WatcherSet] = {}
        self.ranges: dict[tuple[bytes, bytes], WatcherSet] = {}
        self._index: _SegmentIndex | None = None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __contains__(self, w: Watcher) -> bool:
        s = self.keys.get(w.key) if w.end is None else self.ranges.get((w.key, w.end))
        return s is not None and w in s.watchers

    def add(self, w: Watcher) -> None:
        if w.end is None:
            s = self.keys.get(w.key)
            if s is None:
                s = self.keys[w.key] = WatcherSet(w.key, None)
        else:
            r = (w.key, w.end)
            s = self.ranges.get(r)
            if s is None:
                s = self.ranges[r] = WatcherSet(w.key, w.end)
                self._index = None
        if w not in s.watchers:
            s.watchers[w] = None
            self.size += 1

    def remove(self, w: Watcher) -> bool:
        if w.end is None:
            s = self.keys.get(w.key)
            if s is None or w not in s.watchers:
                return False
            del s.watchers[w]
            if not s.watchers:
                del self.keys[w.key]
        else:
            r = (w.key, w.end)
            s = self.ranges.get(r)
            if s is None or w not in s.watchers:
                return False
            del s.watchers[w]
            if not s.watchers:
                del self.ranges[r]
                self._index = None
        self.size -= 1
        return True

    def watchers(self) -> Iterable[Watcher]:
        for s in self.keys.values():
            yield from s.watchers
        for s in self.ranges.values():
            yield from s.watchers

    def match(self, events: Sequence[WatchEvent]) -> Matches:
        """The events (in their order) that fall in each set's range."""
        out: Matches = {}
        keys = self.keys
        if keys:
            get = keys.get
            for e in events:
                s = get(e.key)
                if s is not None:
                    lst = out.get(s)
                    if lst is None:
                        out[s] = [e]
                    else:
                        lst.append(e)
        if self.ranges:
            index = self._index
            if index is None:
                index = self._index = _SegmentIndex(self.ranges.values())
            bounds, covers = index.bounds, index.covers
            for e in events:
                i = bisect_right(bounds, e.key) - 1
                if i < 0:
                    continue
                for s in covers[i]:
                    lst = out.get(s)
                    if lst is None:
                        out[s] = [e]
                    else:
                        lst.append(e)
        return out
