"""The parts of the key index (key_index.py): what it needs of a change,
the page it answers, the corrections it keeps for an older revision, and
counting and walking a range of a sorted key list."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

from sortedcontainers import SortedList


class ChangedKey(Protocol):
    """What the index needs of a committed change (mvcc's Change)."""

    @property
    def rev(self) -> int: ...
    @property
    def key(self) -> bytes: ...
    @property
    def deleted(self) -> bool: ...
    @property
    def prev(self) -> bytes | None: ...


@dataclass(slots=True)
class Page:
    """The first keys of a range live at a revision, how many there are in
    all, and which of the page's keys changed after that revision (their
    values at it must be read from history, not from the live index)."""

    keys: list[bytes]
    count: int
    changed: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class PastKeys:
    """The corrections that turn the current key set into the set live at
    `rev`. `live_then` covers the log's changes after rev up to (not
    including) the one at position `upto` (counted from the first change
    ever logged, so trimming the log's head does not move it); `added` and
    `removed` are right for every key in live_then except those in
    `unsettled`, gathered but not yet compared with the current key set.
    The corrections are whole when upto is the log's end and nothing is
    unsettled."""

    rev: int
    upto: int
    # every key changed after rev -> whether it was live at rev
    live_then: dict[bytes, bool] = field(default_factory=dict)
    added: SortedList = field(default_factory=SortedList)  # live now, not at rev
    removed: SortedList = field(default_factory=SortedList)  # live at rev, not now
    unsettled: set[bytes] = field(default_factory=set)


def count_in(keys: SortedList, start: bytes, end: bytes) -> int:
    """Keys in [start, end); end b"" means no upper bound."""
    lo = keys.bisect_left(start)
    hi = len(keys) if end == b"" else keys.bisect_left(end)
    return max(0, hi - lo)


def keys_in(keys: SortedList, start: bytes, end: bytes) -> Iterator[bytes]:
    if end == b"":
        return keys.irange(start)
    return keys.irange(start, end, inclusive=(True, False))
