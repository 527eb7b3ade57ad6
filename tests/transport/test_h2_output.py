"""How a connection batches its output: what handlers emit in one event-loop
turn leaves in one write, unless it passes FLUSH_BYTES, when it leaves at
once so that a burst starts reaching the client while it is still encoded;
and a large output is copied into the transport a part at a time, only
while the transport takes it."""
from __future__ import annotations

import asyncio

from brain.transport.h2.limits import MAX_SERVER_HELD_HEADERS, HeldHeaders
from brain.transport.protocol import FLUSH_BYTES, WRITE_CHUNK, ClientConnection


class _FakeServer:
    """The one part of a server a connection reads when it is made."""

    held_headers = HeldHeaders(MAX_SERVER_HELD_HEADERS)


class _Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def test_small_output_shares_a_write_and_a_burst_leaves_early():
    async def main():
        conn = ClientConnection(server=_FakeServer())  # type: ignore[arg-type]
        sink = _Recording()
        conn.transport = sink  # type: ignore[assignment]

        for _ in range(10):
            conn.core.emit(b"x" * 100)
        assert sink.writes == []
        await asyncio.sleep(0)
        assert sink.writes == [b"x" * 1000]

        piece = b"y" * (FLUSH_BYTES // 4)
        for _ in range(10):
            conn.core.emit(piece)
        # written each time the collected output reached FLUSH_BYTES; the
        # remainder waits for the next turn
        assert [len(w) for w in sink.writes[1:]] == [FLUSH_BYTES, FLUSH_BYTES]
        await asyncio.sleep(0)
        assert [len(w) for w in sink.writes[1:]] == [FLUSH_BYTES, FLUSH_BYTES, 2 * len(piece)]
        assert b"".join(sink.writes[1:]) == piece * 10

    asyncio.run(main())


class _PushingBack(_Recording):
    """A transport that, like asyncio's and uvloop's, calls pause_writing
    once more than high_water bytes wait in its buffer (here: all it was
    given since the last drain)."""

    def __init__(self, conn: ClientConnection, high_water: int) -> None:
        super().__init__()
        self.conn = conn
        self.high_water = high_water
        self.buffered = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.buffered += len(data)
        if self.buffered > self.high_water and not self.conn.paused:
            self.conn.pause_writing()

    def drain(self) -> None:
        self.buffered = 0
        self.conn.resume_writing()


def test_a_large_output_is_written_in_parts_while_the_transport_takes_them():
    async def main():
        conn = ClientConnection(server=_FakeServer())  # type: ignore[arg-type]
        sink = _PushingBack(conn, high_water=64 * 1024)
        conn.transport = sink  # type: ignore[assignment]
        body = bytes(range(256)) * (16 * 1024)  # 4 MiB, queued in one piece as a response's pieces are
        conn.core.emit(memoryview(body))
        conn.core.emit(b"trailer")
        await asyncio.sleep(0)
        # one part copied, then the transport pushed back: the rest waits
        assert [len(w) for w in sink.writes] == [WRITE_CHUNK]
        assert conn.core.output_size == len(body) + 7 - WRITE_CHUNK
        rounds = 0
        while conn.core.output_size:
            sink.drain()
            rounds += 1
        assert rounds == -(-(len(body) + 7 - WRITE_CHUNK) // WRITE_CHUNK)
        assert all(len(w) <= WRITE_CHUNK for w in sink.writes)
        assert b"".join(sink.writes) == body + b"trailer"

    asyncio.run(main())


def test_closing_writes_all_that_is_queued_even_while_paused():
    async def main():
        conn = ClientConnection(server=_FakeServer())  # type: ignore[arg-type]
        sink = _PushingBack(conn, high_water=0)
        sink.close = lambda: None  # type: ignore[attr-defined]
        conn.transport = sink  # type: ignore[assignment]
        conn.pause_writing()
        body = b"z" * (3 * WRITE_CHUNK)
        conn.core.emit(body)
        conn.close()
        assert b"".join(sink.writes) == body

    asyncio.run(main())
