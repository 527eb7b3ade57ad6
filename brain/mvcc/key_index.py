"""Which keys are live, in order, at the current revision and at recent ones.

etcd answers counts and list pages from an in-memory index of every key
(its treeIndex); brain keeps the smallest part of that which answers them:

- the user keys live at the store's newest revision, in a sorted list with
  positional bisection, so the number of keys in any range is two
  bisections and a page's keys are a slice;
- a log of what changed at each revision since the compact revision
  (create, update, delete per key), so the keys live at an older revision
  that a read may still ask for (a paged list pins the revision of its first
  page) are the current keys corrected by what changed since.

For each such older revision the corrections are gathered once and kept
(`PastKeys`), then brought forward as later commits arrive, so every page of
a list costs its own keys plus what changed meanwhile, never a walk of the
rest of the range. The log is bounded: a read older than what it holds
(`floor`) gets None and is answered from the engine's history instead.

Gathering the corrections for a revision far behind can touch as many
changes as the log holds, so a reader first calls `advance` in slices of
bounded work, yielding between them, until what is left is a slice at most;
the read itself then finishes it in the same turn as it answers.

A revision that changes very many keys (a DeleteRange of a whole prefix, a
lease revoked with all its keys) is applied by `apply_in_slices`, a bounded
slice per turn of the loop. Until it is done the index is `updating`: its
key set is half way between two revisions, so every reader first awaits
`settled()`; count, page and advance answer None (or True) meanwhile, which
sends a reader that did not wait to the engine, never to a half-applied set.
"""
from __future__ import annotations

import asyncio
from array import array
from bisect import bisect_right
from collections import OrderedDict, deque
from heapq import merge
from itertools import islice
from typing import Iterable, Iterator, Sequence

from sortedcontainers import SortedList

from brain.mvcc.key_index_types import ChangedKey, Page, PastKeys, count_in, keys_in

CREATE, UPDATE, DELETE = 0, 1, 2

# Changes kept in the log. Compaction trims it too (reads below the compact
# revision are refused), so this cap bites only when compaction lags.
MAX_LOG = 1_000_000
# Older revisions whose corrections are kept, and the changes they may hold
# in all; the least recently read goes first.
MAX_PAST = 32
MAX_PAST_CHANGES = 2_000_000
# Log entries (or touched keys) one call of advance works through.
ADVANCE_SLICE = 8192
# Changes apply_in_slices applies per turn of the loop; a commit of at most
# this many is applied at once, as apply does.
APPLY_SLICE = 4096


_BYTES_OVERHEAD = 33  # sys.getsizeof(b"")
_CORRECTION_BYTES = 100  # a dict entry, a set slot and a list slot, about


class KeyIndex:
    def __init__(self, rev: int, keys: Iterable[bytes] | None = (), max_log: int = MAX_LOG) -> None:
        """keys: the keys live at rev, or None while they are still being
        read (see loaded): until then every query answers None and the
        changes committed meanwhile are only logged."""
        self.rev = rev
        self.ready = keys is not None
        self.keys = SortedList(keys or ())
        self.key_bytes = sum(map(len, self.keys))
        # the log: parallel lists from _start on, revisions ascending
        self._revs = array("q")
        self._keys: list[bytes] = []
        self._kinds = bytearray()
        self._start = 0
        self._dropped = 0  # changes deleted from the lists' head
        # every change above floor is in the log
        self.floor = rev
        self._deferred_floor = 0  # a trim asked for while the keys were read
        self.max_log = max_log
        self._past: OrderedDict[int, PastKeys] = OrderedDict()
        self._past_changes = 0
        self.past_hits = 0  # pages answered at an older revision, for metrics
        # commits waiting for the one apply_in_slices is applying, in order
        self._queued: deque[tuple[Sequence[ChangedKey], int]] = deque()
        # set while a commit is being applied in slices; done when settled
        self._settled: asyncio.Future[None] | None = None
        self._applier: asyncio.Task | None = None  # kept: the loop holds tasks weakly

    def __len__(self) -> int:
        return len(self.keys)

    def loaded(self, keys: SortedList, key_bytes: int) -> None:
        """The keys live at the revision this index started at (its floor),
        read while the store went on: the changes logged since are applied
        to them, and the index answers from now on."""
        revs, log_keys, kinds = self._revs, self._keys, self._kinds
        for i in range(self._start, len(revs)):
            k = log_keys[i]
            if kinds[i] == CREATE:
                keys.add(k)
                key_bytes += len(k)
            elif kinds[i] == DELETE:
                keys.discard(k)
                key_bytes -= len(k)
        self.keys = keys
        self.key_bytes = key_bytes
        self.ready = True
        self._trim_log()

    @property
    def log_size(self) -> int:
        return len(self._revs) - self._start

    @property
    def past_changes(self) -> int:
        return self._past_changes

    @property
    def estimated_bytes(self) -> int:
        """What the index holds, by CPython's object sizes: a bytes object
        and a list slot per live key, a revision, a kind and a list slot
        per logged change (its key shared or counted alike), and a dict
        entry and a list slot per correction held."""
        keys = len(self.keys)
        return (
            self.key_bytes + keys * (_BYTES_OVERHEAD + 8)
            + self.log_size * (8 + 1 + 8)
            + self._past_changes * _CORRECTION_BYTES
        )

    # -- writes (the store's writer, after each durable commit) --------------

    @property
    def updating(self) -> bool:
        """A commit is being applied in slices: the key set is half way."""
        return self._settled is not None

    async def settled(self) -> None:
        """Return once no commit is being applied in slices (at once when
        none is). A reader awaits this before each synchronous use of the
        index, since any await of its own may let a slice in."""
        while self._settled is not None:
            await asyncio.shield(self._settled)

    def apply(self, changes: Sequence[ChangedKey], rev: int) -> None:
        """Changes committed in revision order; the store is now at rev.
        While a commit is being applied in slices, these wait behind it."""
        if self._settled is not None:
            self._queued.append((changes, rev))
            return
        self._apply_now(changes, rev)

    def _apply_now(self, changes: Sequence[ChangedKey], rev: int) -> None:
        self._apply_slice(changes)
        self.rev = rev
        self._trim_log()

    def apply_in_slices(self, changes: Sequence[ChangedKey], rev: int, slice_size: int = APPLY_SLICE) -> asyncio.Future[None]:
        """As apply, for a commit of any size: at most slice_size changes
        per turn of the event loop, by a task of the index's own. From this
        call on, until the whole commit is in, the index is updating and
        readers wait (see settled); commits applied meanwhile (by apply or
        by this) queue behind it. The future returned is done when they are
        all in; a caller need not await it, and cancelling it does not stop
        the update (the index is never left half way)."""
        loop = asyncio.get_running_loop()
        if self._settled is None and len(changes) <= slice_size:
            self._apply_now(changes, rev)
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        self._queued.append((changes, rev))
        if self._settled is None:
            self._settled = loop.create_future()
            self._applier = loop.create_task(self._apply_queued(slice_size), name="mvcc-key-index-apply")
        return asyncio.shield(self._settled)

    async def _apply_queued(self, slice_size: int) -> None:
        queued = self._queued
        try:
            while queued:
                changes, rev = queued[0]
                for i in range(0, len(changes), slice_size):
                    if i:
                        await asyncio.sleep(0)
                    self._apply_slice(changes[i:i + slice_size])
                self.rev = rev
                queued.popleft()
        finally:
            settled, self._settled = self._settled, None
            self._applier = None
            if settled is not None:
                settled.set_result(None)
            self._trim_log()

    def _apply_slice(self, changes: Sequence[ChangedKey]) -> None:
        keys = self.keys
        ready = self.ready
        log_revs, log_keys, kinds = self._revs, self._keys, self._kinds
        key_bytes = 0
        for c in changes:
            k = c.key
            if c.deleted:
                kind = DELETE
                if ready:
                    keys.discard(k)
                    key_bytes -= len(k)
            elif c.prev is None:
                kind = CREATE
                if ready:
                    keys.add(k)
                    key_bytes += len(k)
            else:
                kind = UPDATE
            log_revs.append(c.rev)
            log_keys.append(k)
            kinds.append(kind)
        self.key_bytes += key_bytes

    def _trim_log(self) -> None:
        if not self.ready:
            return
        if self._deferred_floor:
            self._trim(self._deferred_floor)
        if self.log_size > self.max_log:
            self._trim(self._revs[self._start + self.log_size - self.max_log])

    def forget_below(self, compact_rev: int) -> None:
        """Reads below the compact revision are refused: what only they
        could need goes."""
        self._trim(compact_rev)

    def _trim(self, floor: int) -> None:
        """Keep only the changes above floor (all of them while the keys
        are still being read: loaded() needs them)."""
        if not self.ready or self._settled is not None:
            # (while updating: the log's tail is half a commit; the trim
            # waits for the end of apply_in_slices)
            self._deferred_floor = max(self._deferred_floor, floor)
            return
        if floor <= self.floor:
            return
        self.floor = floor
        revs = self._revs
        n = len(revs)
        # the log is in revision order: skip what is at or below floor
        self._start = bisect_right(revs, floor, self._start)
        if self._start > 4096 and self._start * 2 > n:
            del self._revs[: self._start]
            del self._keys[: self._start]
            del self._kinds[: self._start]
            self._dropped += self._start
            self._start = 0
        for r in [r for r in self._past if r < floor]:
            self._drop(r)

    # -- reads ---------------------------------------------------------------

    def count(self, rev: int, start: bytes, end: bytes) -> int | None:
        """Keys live at rev in [start, end) (end b"": no bound); None when
        rev is older than the log reaches, the keys are being read, or a
        commit is being applied in slices (see settled)."""
        if not self.ready or self._settled is not None:
            return None
        now = count_in(self.keys, start, end)
        if rev == self.rev:
            return now
        past = self._at(rev)
        if past is None:
            return None
        return now - count_in(past.added, start, end) + count_in(past.removed, start, end)

    def page(self, rev: int, start: bytes, end: bytes, limit: int) -> Page | None:
        """The first limit keys (all when limit <= 0) live at rev in
        [start, end), with the count of all of them; None when rev is older
        than the log reaches, the keys are being read, or a commit is being
        applied in slices (see settled)."""
        if not self.ready or self._settled is not None:
            return None
        keys = self.keys
        if rev == self.rev:
            it: Iterator[bytes] = keys_in(keys, start, end)
            return Page(list(islice(it, limit) if limit > 0 else it), count_in(keys, start, end))
        past = self._at(rev)
        if past is None:
            return None
        count = count_in(keys, start, end) - count_in(past.added, start, end) + count_in(past.removed, start, end)
        live_then = past.live_then
        then = merge(
            (k for k in keys_in(keys, start, end) if live_then.get(k, True)),
            keys_in(past.removed, start, end),
        )
        page = list(islice(then, limit) if limit > 0 else then)
        changed = {k for k in page if k in live_then}
        self.past_hits += 1
        return Page(page, count, changed)

    def advance(self, rev: int, budget: int = ADVANCE_SLICE) -> bool:
        """Bring the corrections for rev forward by at most about budget
        log entries or keys; True when a read at rev now costs at most one
        such slice more (or rev is not one the index answers, which the read
        then finds out). A reader calls this between turns of its event loop
        until it says True, so no single turn gathers a long log."""
        if not self.ready or self._settled is not None or rev < self.floor or rev >= self.rev:
            return True
        return self._advance(self._past_at(rev), budget)

    def _past_at(self, rev: int) -> PastKeys:
        past = self._past.get(rev)
        if past is None:
            first = bisect_right(self._revs, rev, self._start)  # the first change after rev
            past = PastKeys(rev, self._dropped + first)
            self._past[rev] = past
        else:
            self._past.move_to_end(rev)
        return past

    def _at(self, rev: int) -> PastKeys | None:
        """The corrections for rev, brought up to the index's revision."""
        if rev < self.floor or rev > self.rev:
            return None
        past = self._past_at(rev)
        self._advance(past, 0)
        while self._past_changes > MAX_PAST_CHANGES or len(self._past) > MAX_PAST:
            oldest = next(iter(self._past))
            if oldest == rev:
                break
            self._drop(oldest)
        return past

    def _advance(self, past: PastKeys, budget: int) -> bool:
        """Gather the log from past.upto into live_then, then settle the
        gathered keys against the current key set; at most budget entries
        and budget keys (0: all). True when the corrections are whole or
        what is left is within budget."""
        end = len(self._revs)
        lo = past.upto - self._dropped
        hi = end if budget <= 0 else min(end, lo + budget)
        live_then = past.live_then
        unsettled = past.unsettled
        before = len(live_then)
        log_keys, kinds = self._keys, self._kinds
        for i in range(lo, hi):
            k = log_keys[i]
            if k not in live_then:
                live_then[k] = kinds[i] != CREATE
            unsettled.add(k)
        self._past_changes += len(live_then) - before
        past.upto = self._dropped + hi
        if hi < end:
            return False
        now = self.keys
        added, removed = past.added, past.removed
        n = len(unsettled) if budget <= 0 else min(len(unsettled), budget)
        for _ in range(n):
            k = unsettled.pop()
            was = live_then[k]
            is_live = k in now
            added.discard(k)
            removed.discard(k)
            if is_live and not was:
                added.add(k)
            elif was and not is_live:
                removed.add(k)
        return len(unsettled) <= budget

    def _drop(self, rev: int) -> None:
        past = self._past.pop(rev)
        self._past_changes -= len(past.live_then)
