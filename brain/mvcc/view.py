"""A consistent read view of the store at one committed revision.

The writer publishes a new ReadView after every group commit: an engine
snapshot paired with the revision it holds. Every read and every response
header uses one view, so a reader never sees a write whose revision is above
the header it returns (the committed-revision watermark).
"""
from __future__ import annotations

import asyncio
import logging

from brain.mvcc.errors import CompactedError, CorruptError, FutureRevisionError
from brain.etcdpb import kv_pb2
from brain.mvcc import records as K
from brain.mvcc.key_index import KeyIndex
from brain.mvcc.key_index_types import Page
from brain.mvcc.kv import RangeEnd, RawRange, View
from engines.base import Snapshot

log = logging.getLogger(__name__)

KeyValue = kv_pb2.KeyValue
_parse_kv = KeyValue.FromString

# Objects freed per turn of the event loop when a large result is dropped.
DROP_SLICE = 8192


async def drop_in_slices(items: list) -> None:
    """Empty a list, freeing its items a slice per turn of the event loop:
    freeing a million at once would hold the loop (and the GIL) for as long
    as a large read took to make them."""
    if len(items) <= DROP_SLICE:
        items.clear()
        return
    while items:
        del items[-DROP_SLICE:]
        await asyncio.sleep(0)


async def values_in_slices(items: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The values of a scan's pairs, which are dropped: for a large scan, a
    slice per turn of the event loop."""
    if len(items) <= DROP_SLICE:
        out = [v for _, v in items]
        items.clear()
        return out
    out = []
    for i in range(0, len(items), DROP_SLICE):
        out += [v for _, v in items[i : i + DROP_SLICE]]
        await asyncio.sleep(0)
    await drop_in_slices(items)
    return out


def _empty_range(key: bytes, end: RangeEnd) -> bool:
    return end is not None and end != b"" and end <= key


async def _gather_corrections(index: KeyIndex, rev: int) -> None:
    """The key index's corrections for an older revision, gathered a slice
    per turn of the loop (behind any large commit being applied); the last
    slice is left to the read itself, in the same turn as it answers."""
    while not index.advance(rev):
        await asyncio.sleep(0)
        await index.settled()


class ReadView:
    __slots__ = ("snapshot", "rev", "compact_rev", "index", "snapshot_rev")

    def __init__(self, snapshot: Snapshot, rev: int, compact_rev: int, index: KeyIndex, snapshot_rev: int = 0) -> None:
        self.snapshot = snapshot
        self.rev = rev
        self.compact_rev = compact_rev
        # The revision the snapshot holds, when it is newer than rev: a
        # follower catching up in chunks publishes one snapshot at each
        # chunk's revision. Such a view reads keys from their history
        # (versions are immutable), never from the snapshot's live index,
        # which is ahead of it.
        self.snapshot_rev = max(snapshot_rev, rev)
        # shared by every view of the store and kept at the newest commit:
        # asked at this view's revision, it answers for this view
        self.index = index

    def check_rev(self, rev: int) -> int:
        """etcd's rules for a requested revision: 0 means current; above the
        current is a future revision; below the compact revision is gone."""
        if rev > self.rev:
            raise FutureRevisionError()
        if rev <= 0:
            return self.rev
        if rev < self.compact_rev:
            raise CompactedError()
        return rev

    async def get_latest(self, key: bytes) -> bytes | None:
        """The serialized live KeyValue of key at this view's revision."""
        return await self.snapshot.get(K.index_key(key))

    async def get_live(self, key: bytes) -> bytes | None:
        """get_latest, without an engine read when the key index is at this
        view and lacks the key (a create's read of the key it creates)."""
        index = self.index
        # (while a commit of many keys is being applied to the index, its
        # key set is half way: the engine answers instead, without waiting)
        if index.ready and not index.updating and index.rev == self.rev and key not in index.keys:
            return None
        return await self.get_latest(key)

    async def range(
        self,
        key: bytes,
        end: RangeEnd,
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RawRange:
        """Keys in [key, end) live at rev (0: this view's revision).

        limit <= 0 means no limit; count is always the full total."""
        rev = self.check_rev(rev)
        if _empty_range(key, end):
            return RawRange([], 0)
        if end is None:
            return await self._get(key, rev, count_only)
        index = self.index
        if index.updating:  # a commit of many keys is being applied
            await index.settled()
        if self.snapshot_rev > self.rev:
            # the snapshot is ahead of this view (see __init__): its live
            # keys are not this view's, so keys come from history; a count
            # from the index, its corrections gathered a slice per turn
            if count_only and index.ready:
                await _gather_corrections(index, rev)
                n = index.count(rev, key, end)
                if n is not None:
                    return RawRange([], n)
            return await self._range_history(key, end, rev, limit, count_only)
        if not index.ready:  # still being read at start: from the engine
            if rev == self.rev:
                return await self._range_walk(key, end, limit, count_only)
            return await self._range_history(key, end, rev, limit, count_only)
        if rev == self.rev == index.rev:
            # the index is at this view: the count from it, the page as
            # the engine's index holds it
            count = index.count(rev, key, end)
            assert count is not None
            if count_only or count == 0:
                return RawRange([], count)
            start, stop = K.index_range(key, end or None)
            items = await self.snapshot.scan(start, stop, limit=limit if 0 < limit < count else 0)
            return RawRange(await values_in_slices(items), count)
        await _gather_corrections(index, rev)
        if count_only:
            n = index.count(rev, key, end)
            if n is not None:
                return RawRange([], n)
        else:
            got = await self._range_past(key, end, rev, limit)
            if got is not None:
                return got
        # older than the index's log reaches
        return await self._range_history(key, end, rev, limit, count_only)

    async def _range_walk(self, key: bytes, end: bytes, limit: int, count_only: bool) -> RawRange:
        """A range at this view's revision without the key index: the count
        from a walk of the engine's key set, the page from its index."""
        snap = self.snapshot
        counted = await snap.scan(*K.keyset_range(key, end), keys_only=True)
        count = len(counted)
        await drop_in_slices(counted)
        if count_only or count == 0:
            return RawRange([], count)
        start, stop = K.index_range(key, end or None)
        items = await snap.scan(start, stop, limit=limit if 0 < limit < count else 0)
        return RawRange(await values_in_slices(items), count)

    async def _get(self, key: bytes, rev: int, count_only: bool) -> RawRange:
        """One key at rev."""
        latest = rev == self.rev == self.snapshot_rev
        raw = await (self.get_latest(key) if latest else self._get_at(key, rev))
        if raw is None:
            return RawRange([], 0)
        return RawRange([] if count_only else [raw], 1)

    async def _get_at(self, key: bytes, rev: int) -> bytes | None:
        """The serialized KeyValue of key live at rev (None: not live)."""
        return await K.read_version_at(self.snapshot, key, rev)

    async def _range_past(self, key: bytes, end: bytes, rev: int, limit: int) -> RawRange | None:
        """A range at an older revision from the key index, a slice of at
        most DROP_SLICE keys per turn of the event loop; None when the index
        does not reach rev (or stops reaching it between two slices)."""
        want = limit if limit > 0 else 0
        page = self.index.page(rev, key, end, min(want, DROP_SLICE) if want else DROP_SLICE)
        if page is None:
            return None
        count = page.count
        kvs = await self._values(page, rev)
        target = min(want, count) if want else count
        while len(kvs) < target:
            await asyncio.sleep(0)
            await self.index.settled()
            page = self.index.page(rev, page.keys[-1] + b"\x00", end, min(target - len(kvs), DROP_SLICE))
            if page is None or not page.keys:
                return None
            kvs += await self._values(page, rev)
        return RawRange(kvs, count)

    async def _values(self, page: Page, rev: int) -> list[bytes]:
        """The values at rev of a page's keys: from the engine's index for
        the keys unchanged since rev, from history for the others."""
        keys = page.keys
        if not keys:
            return []
        items = await self.snapshot.scan(K.index_key(keys[0]), K.index_key(keys[-1] + b"\x00"))
        if not page.changed and len(items) == len(keys):
            return [v for _, v in items]
        now = {K.index_user_key(k): v for k, v in items}
        changed = page.changed
        out = []
        for k in keys:
            raw = await self._get_at(k, rev) if k in changed else now.get(k)
            if raw is None:  # cannot happen while revisions are immutable
                log.error("key %r is in the key index at revision %d but not in the engine", k, rev)
                raise CorruptError()
            out.append(raw)
        return out

    async def _range_history(self, key: bytes, end: bytes, rev: int, limit: int, count_only: bool) -> RawRange:
        """A range at a revision older than the key index reaches: from
        every version in the range's history."""
        snap = self.snapshot
        start, stop = K.history_range(key, end or None)
        # each key's newest version at or below rev, by escaped history
        # prefix, in key order (versions of one key sort oldest first);
        # a slice per turn of the event loop, as the range may be large
        versions = await snap.scan(start, stop)
        newest: dict[bytes, bytes] = {}
        for i in range(0, len(versions), DROP_SLICE):
            for ek, ev in versions[i : i + DROP_SLICE]:
                if K.history_key_rev(ek) <= rev:
                    newest[K.history_key_prefix(ek)] = ev
            await asyncio.sleep(0)
        await drop_in_slices(versions)
        live: list[bytes] = []
        items = list(newest.items())
        for i in range(0, len(items), DROP_SLICE):
            live += [p for p, v in items[i : i + DROP_SLICE] if not K.is_tombstone(v)]
            await asyncio.sleep(0)
        count = len(live)
        if count_only:
            return RawRange([], count)
        page = live[:limit] if limit > 0 else live
        out = [newest[p] for p in page]
        in_index = [i for i, raw in enumerate(out) if K.is_live_marker(raw)]
        # live versions are stored in the index only
        for j in range(0, len(in_index), DROP_SLICE):
            part = in_index[j : j + DROP_SLICE]
            found = await K.read_live(snap, [K.history_prefix_user_key(page[i]) for i in part])
            for i, raw in zip(part, found):
                out[i] = raw  # type: ignore[call-overload, assignment]  # the index holds every key of the page
            await asyncio.sleep(0)
        return RawRange(out, count)


# held to the interface by the type checker
_IMPLEMENTS: type[View] = ReadView
