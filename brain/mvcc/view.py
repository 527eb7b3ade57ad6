"""A consistent read view of the store at one committed revision.

The writer publishes a new ReadView after every group commit: an engine
snapshot paired with the revision it holds. Every read and every response
header uses one view, so a reader never sees a write whose revision is above
the header it returns (the committed-revision watermark).
"""
from __future__ import annotations

from dataclasses import dataclass

from brain import errors
from brain.etcdpb import kv_pb2
from brain.mvcc import keys as K
from brain.mvcc.live_keys import LiveKeyCache, LiveKeys
from engines.base import Snapshot

KeyValue = kv_pb2.KeyValue
_parse_kv = KeyValue.FromString

# A range end of None selects the single key; b"" selects every key >= key
# (etcd's "\0" range end); anything else is the exclusive upper bound.
RangeEnd = bytes | None


@dataclass(slots=True)
class RawRange:
    """Serialized KeyValues in key order, the exact total in the range, and
    the revision the result was read at."""

    kvs: list[bytes]
    count: int


def is_tombstone(kv: KeyValue) -> bool:
    return kv.version == 0


def _empty_range(key: bytes, end: RangeEnd) -> bool:
    return end is not None and end != b"" and end <= key


class ReadView:
    __slots__ = ("snapshot", "rev", "compact_rev", "live_keys")

    def __init__(self, snapshot: Snapshot, rev: int, compact_rev: int, live_keys: LiveKeyCache) -> None:
        self.snapshot = snapshot
        self.rev = rev
        self.compact_rev = compact_rev
        # shared by every view of the store: what paged lists learnt
        self.live_keys = live_keys

    def check_rev(self, rev: int) -> int:
        """etcd's rules for a requested revision: 0 means current; above the
        current is a future revision; below the compact revision is gone."""
        if rev > self.rev:
            raise errors.ErrFutureRev
        if rev <= 0:
            return self.rev
        if rev < self.compact_rev:
            raise errors.ErrCompacted
        return rev

    async def get_latest(self, key: bytes) -> bytes | None:
        """The serialized live KeyValue of key at this view's revision."""
        return await self.snapshot.get(K.INDEX + key)

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
        if end is not None and limit > 0:
            known = self.live_keys.lookup(rev, key, end)
            if known is not None:
                got = await self._range_known(known, key, rev, limit, count_only)
                if got is not None:
                    return got
        if rev == self.rev:
            return await self._range_latest(key, end, limit, count_only)
        return await self._range_history(key, end, rev, limit, count_only)

    async def _range_known(self, known: LiveKeys, key: bytes, rev: int, limit: int, count_only: bool) -> RawRange | None:
        """A page of a range whose live keys at rev are known: the count
        from them, the values of just the page's keys from the engine."""
        page, count = known.page(key, limit)
        if count_only or not page:
            return RawRange([], count)
        sub_end = page[-1] + b"\x00"
        if rev == self.rev:
            items = await self.snapshot.scan(K.INDEX + page[0], K.INDEX + sub_end)
            kvs = [v for _, v in items]
        else:
            kvs = (await self._range_history(page[0], sub_end, rev, 0, False)).kvs
        if len(kvs) != len(page):  # cannot happen while revisions are immutable
            return None
        return RawRange(kvs, count)

    async def _range_latest(self, key: bytes, end: RangeEnd, limit: int, count_only: bool) -> RawRange:
        snap = self.snapshot
        if end is None:
            raw = await snap.get(K.INDEX + key)
            if raw is None:
                return RawRange([], 0)
            return RawRange([] if count_only else [raw], 1)
        start, stop = K.index_range(key, end or None)
        if count_only:
            return RawRange([], len(await snap.scan(start, stop, keys_only=True)))
        if limit <= 0:
            items = await snap.scan(start, stop)
            return RawRange([v for _, v in items], len(items))
        items = await snap.scan(start, stop, limit=limit)
        count = len(items)
        if count == limit:
            # count ignores limit: the rest of the range is counted, not read
            last = items[-1][0]
            rest = await snap.scan(last + b"\x00", stop, keys_only=True)
            if rest:
                count += len(rest)
                # the next pages of this list come at this revision
                self.live_keys.remember(self.rev, key, end, [k[1:] for k, _ in items] + [k[1:] for k, _ in rest])
        return RawRange([v for _, v in items], count)

    async def _range_history(self, key: bytes, end: RangeEnd, rev: int, limit: int, count_only: bool) -> RawRange:
        snap = self.snapshot
        if end is None:
            prefix = K.history_prefix(key)
            items = await snap.scan(prefix, prefix + K.pack_rev(rev + 1), limit=1, reverse=True)
            if not items:
                return RawRange([], 0)
            raw = items[0][1]
            if raw == K.LIVE:
                if count_only:
                    return RawRange([], 1)
                raw = await snap.get(K.INDEX + key)
                return RawRange([raw], 1)  # type: ignore[list-item]
            if is_tombstone(_parse_kv(raw)):
                return RawRange([], 0)
            return RawRange([] if count_only else [raw], 1)
        start, stop = K.history_range(key, end or None)
        # each key's newest version at or below rev, by escaped history
        # prefix, in key order (versions of one key sort oldest first)
        newest: dict[bytes, bytes] = {}
        for ek, ev in await snap.scan(start, stop):
            if K.unpack_rev(ek[-8:])[0] <= rev:
                newest[ek[:-8]] = ev
        live = [p for p, v in newest.items() if v == K.LIVE or not is_tombstone(_parse_kv(v))]
        count = len(live)
        if count_only:
            return RawRange([], count)
        page = live[:limit] if limit > 0 else live
        out = [newest[p] for p in page]
        in_index = [i for i, raw in enumerate(out) if raw == K.LIVE]
        if in_index:
            # live versions are stored in the index only
            found = await snap.batch_get([K.INDEX + K.unescape(page[i][1:]) for i in in_index])
            for i, raw in zip(in_index, found):
                out[i] = raw  # type: ignore[call-overload]
        if limit > 0 and count > limit:
            # the live keys, for the next pages of a list
            self.live_keys.remember(rev, key, end, [K.unescape(p[1:]) for p in live])
        return RawRange(out, count)

    def close(self) -> None:
        self.snapshot.close()
