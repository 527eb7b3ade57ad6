"""A watcher: one watch of one stream (etcd's mvcc watcher).

What a watcher is sent depends on its key range, the revision it has reached,
and a few options. The options that change the bytes of its events (prev_kv,
the NOPUT/NODELETE filters, fragment) are folded into one small integer, the
watcher's `variant`, so that watchers with equal options share one encoding
of the events they receive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from brain.wire import int_field
from brain.wire.tags import WATCH_RESPONSE_WATCH_ID

# variant bits
PREV_KV = 1
NO_PUT = 2
NO_DELETE = 4
FRAGMENT = 8  # events kept one per chunk, so a big response can be split


class WatcherState(Enum):
    SYNCED = "synced"  # in the hub's group: gets each commit as it happens
    UNSYNCED = "unsynced"  # behind the store: its stream catches it up from history
    COMPACTED = "compacted"  # told its start revision was compacted; gets nothing more
    CANCELED = "canceled"  # removed from its stream


class EventSink(Protocol):
    """The part of a stream's outbox that fan-out uses (brain/watch/outbox.py)."""

    congested: bool

    def put_events(self, w: Watcher, rev: int, chunks: list[bytes], size: int) -> None: ...


class WatcherOwner(Protocol):
    """The stream a watcher belongs to (brain/watch/stream.py), as the hub
    and fan-out see it: a Protocol keeps the imports one way."""

    @property
    def outbox(self) -> EventSink: ...

    def fall_behind(self, w: Watcher, from_rev: int) -> None: ...


@dataclass(slots=True, eq=False)
class Watcher:
    """eq=False: watchers are compared and hashed by identity."""

    id: int
    key: bytes
    # None: the single key; b"": every key >= key; otherwise the exclusive end
    end: bytes | None
    stream: WatcherOwner
    # the lowest revision not yet delivered (for a synced watcher: the lowest
    # revision it may be sent; it has seen every event below the store's)
    min_rev: int
    # the start revision asked for (0: from now); progress waits for it
    start_rev: int
    variant: int = 0
    progress_notify: bool = False
    state: WatcherState = WatcherState.UNSYNCED
    # no events were sent since the last progress tick (etcd elides the next
    # periodic progress notification after events)
    quiet: bool = True
    id_field: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        self.id_field = int_field(WATCH_RESPONSE_WATCH_ID, self.id)

    @property
    def fragment(self) -> bool:
        return bool(self.variant & FRAGMENT)

    @property
    def prev_kv(self) -> bool:
        return bool(self.variant & PREV_KV)

    def covers(self, key: bytes) -> bool:
        end = self.end
        if end is None:
            return key == self.key
        return self.key <= key and (not end or key < end)

    def __repr__(self) -> str:
        return f"Watcher(id={self.id}, key={self.key!r}, end={self.end!r}, {self.state.value}, min_rev={self.min_rev})"


def variant_of(prev_kv: bool, no_put: bool, no_delete: bool, fragment: bool) -> int:
    return (PREV_KV if prev_kv else 0) | (NO_PUT if no_put else 0) | (NO_DELETE if no_delete else 0) | (FRAGMENT if fragment else 0)
