"""Which keys of a range are live at a revision: remembered for paged lists.

A paged list (kube-apiserver's `limit=500` + continue) reads one range page
by page at one pinned revision, and every page must carry the exact count of
the keys left in the range. Counting means walking every remaining key, so a
list of n keys in pages of p would walk about n²/2p keys in all. But the set
of keys live at a revision never changes (until compaction removes the
revision), so the first page that walks the range leaves the sorted keys
here, and every later page of the same list takes its count, and which keys
it holds, from a bisection. Entries are bounded in number and in keys held;
the oldest goes first.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass

# A list over more keys than this is not remembered (its keys would cost
# more memory than the walks they save are worth holding on to).
MAX_KEYS_PER_ENTRY = 500_000
MAX_KEYS = 2_000_000
MAX_ENTRIES = 64


@dataclass(slots=True)
class LiveKeys:
    """The keys live at rev in [start, end), sorted."""

    start: bytes
    keys: list[bytes]

    def page(self, key: bytes, limit: int) -> tuple[list[bytes], int]:
        """The first limit keys >= key (all for limit <= 0) and how many
        keys >= key there are."""
        i = bisect_left(self.keys, key)
        count = len(self.keys) - i
        return (self.keys[i : i + limit] if limit > 0 else self.keys[i:]), count


class LiveKeyCache:
    def __init__(self, max_keys: int = MAX_KEYS, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[int, bytes], LiveKeys] = OrderedDict()
        self._keys = 0
        self.max_keys = max_keys
        self.max_entries = max_entries
        self.hits = 0

    def lookup(self, rev: int, key: bytes, end: bytes) -> LiveKeys | None:
        """The remembered live keys at rev of a range ending at end that
        covers key, if any."""
        entry = self._entries.get((rev, end))
        if entry is None or entry.start > key:
            return None
        self._entries.move_to_end((rev, end))
        self.hits += 1
        return entry

    def remember(self, rev: int, start: bytes, end: bytes, keys: list[bytes]) -> None:
        if len(keys) > min(MAX_KEYS_PER_ENTRY, self.max_keys):
            return
        slot = (rev, end)
        old = self._entries.pop(slot, None)
        if old is not None:
            self._keys -= len(old.keys)
        self._entries[slot] = LiveKeys(start, keys)
        self._keys += len(keys)
        while self._keys > self.max_keys or len(self._entries) > self.max_entries:
            _, gone = self._entries.popitem(last=False)
            self._keys -= len(gone.keys)

    def forget_below(self, rev: int) -> None:
        """Drop what was remembered of revisions compacted away."""
        for slot in [s for s in self._entries if s[0] < rev]:
            self._keys -= len(self._entries.pop(slot).keys)

    @property
    def keys_held(self) -> int:
        return self._keys
