"""How a connection batches its output: what handlers emit in one event-loop
turn leaves in one write, unless it passes FLUSH_BYTES, when it leaves at
once so that a burst starts reaching the client while it is still encoded."""
from __future__ import annotations

import asyncio

from brain.transport.h2.limits import MAX_SERVER_HELD_HEADERS, HeldHeaders
from brain.transport.protocol import FLUSH_BYTES, ClientConnection


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
