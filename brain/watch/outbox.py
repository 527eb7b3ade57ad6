"""The responses waiting to be sent on one gRPC stream.

The hub puts responses here without waiting; the stream's sender takes them
out as fast as the client reads. Two things keep that cheap and bounded:

- Coalescing. Events for a watcher whose previous event response is still
  waiting are appended to that response instead of queueing a new one (up
  to a size cap), so a busy stream sends fewer, larger messages, and the
  per-message cost of gRPC is paid less often the further the sender falls
  behind. A control response (created, canceled, progress) closes every open
  response, so nothing is ever reordered around one.
- Congestion. Once more than `high_water` bytes are waiting, the stream is
  congested: the hub stops queueing events for its watchers and moves them
  aside (unsynced) instead; they are caught up from history once the sender
  has brought the backlog below `low_water`. Memory stays bounded, and
  neither writers nor other streams ever wait for a slow client.

Byte counts are what will be sent; the event bytes themselves are shared
between watchers, so memory is much less than that when many watchers of one
stream receive the same events.
"""
from __future__ import annotations

import asyncio
from collections import deque

from brain.watch.response import ResponseEncoder
from brain.watch.watcher import Watcher

DEFAULT_HIGH_WATER = 8 * 1024 * 1024
DEFAULT_LOW_WATER = 1 * 1024 * 1024
# An open response takes more events up to this size; past it a new one
# starts (clients' default receive limit is 4 MiB)
COALESCE_BYTES = 1024 * 1024


class PendingEvents:
    """One event response being filled: the watcher, the header revision,
    and the events' bytes (whole revisions, ascending)."""

    __slots__ = ("watcher", "rev", "chunks", "size")

    def __init__(self, watcher: Watcher, rev: int, chunks: list[bytes], size: int) -> None:
        self.watcher = watcher
        self.rev = rev
        self.chunks = chunks
        self.size = size


class Outbox:
    def __init__(self, encoder: ResponseEncoder, high_water: int = DEFAULT_HIGH_WATER, low_water: int = DEFAULT_LOW_WATER) -> None:
        self.encoder = encoder
        self.high_water = high_water
        self.low_water = low_water
        self.items: deque[bytes | PendingEvents] = deque()
        self.open: dict[Watcher, PendingEvents] = {}
        self.queued_bytes = 0
        self.congested = False
        self.closed = False
        self.sent = 0  # responses handed to the transport
        self._ready: asyncio.Future | None = None  # the sender waits for items
        self._drained: asyncio.Future | None = None  # someone waits for low water

    # -- producers -----------------------------------------------------------

    def put_control(self, data: bytes) -> None:
        self.open.clear()
        self.items.append(data)
        self.queued_bytes += len(data)
        self._wake()

    def put_events(self, w: Watcher, rev: int, chunks: list[bytes], size: int) -> None:
        p = self.open.get(w)
        if p is None or p.size + size > COALESCE_BYTES:
            # chunks is shared by every watcher with the same events: copied,
            # since this response may grow
            p = PendingEvents(w, rev, chunks.copy(), size)
            self.items.append(p)
            self.open[w] = p
        else:
            p.chunks.extend(chunks)
            p.size += size
            p.rev = rev
        self.queued_bytes += size
        if self.queued_bytes > self.high_water:
            self.congested = True
        self._wake()

    def _wake(self) -> None:
        f = self._ready
        if f is not None:
            self._ready = None
            if not f.done():
                f.set_result(None)

    # -- the sender ----------------------------------------------------------

    def pop(self) -> list[bytes] | bytes | None:
        """The next response (or, for a fragmenting watcher, its pieces);
        None when nothing is waiting."""
        if not self.items:
            return None
        item = self.items.popleft()
        if isinstance(item, bytes):
            self.queued_bytes -= len(item)
            out: list[bytes] | bytes = item
        else:
            w = item.watcher
            if self.open.get(w) is item:
                del self.open[w]
            self.queued_bytes -= item.size
            if w.fragment:
                out = self.encoder.fragments(w.id_field, item.rev, item.chunks)
            else:
                out = self.encoder.events(w.id_field, item.rev, item.chunks)
        self.sent += 1
        if self.queued_bytes <= self.low_water:
            self.congested = False
            d = self._drained
            if d is not None:
                self._drained = None
                if not d.done():
                    d.set_result(None)
        return out

    async def wait(self) -> None:
        """Until something is queued or the outbox is closed."""
        if self.items or self.closed:
            return
        f = self._ready = asyncio.get_running_loop().create_future()
        await f

    async def wait_drained(self) -> None:
        """Until at most low_water bytes are waiting (or closed)."""
        while self.queued_bytes > self.low_water and not self.closed:
            f = self._drained
            if f is None:
                f = self._drained = asyncio.get_running_loop().create_future()
            await f

    def close(self) -> None:
        self.closed = True
        self.items.clear()
        self.open.clear()
        self.queued_bytes = 0
        self._wake()
        d = self._drained
        if d is not None and not d.done():
            d.set_result(None)
