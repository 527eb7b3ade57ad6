"""The HTTP/2 state of one stream, as the connection core keeps it."""
from __future__ import annotations

from collections import deque

Chunk = bytes | memoryview


class H2Stream:
    """The HTTP/2 state of one open stream. A stream leaves the connection's
    table as soon as it is closed either way; END_STREAM sent before the
    client's is followed by RST_STREAM(NO_ERROR), as gRPC and Go servers
    do, so that the client stops sending."""

    __slots__ = ("stream_id", "send_window", "recv_window", "recv_unacked", "pending", "trailers", "ending", "recv_ended", "header_bytes")

    def __init__(self, stream_id: int, send_window: int, recv_window: int, recv_ended: bool, header_bytes: int = 0) -> None:
        self.stream_id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window  # what the client may still send
        self.recv_unacked = 0
        self.pending: deque[Chunk] | None = None  # body bytes waiting for send window
        self.trailers: bytes | None = None  # the final header block, sent once pending is out
        self.ending = False  # the response ends once pending is out
        self.recv_ended = recv_ended
        self.header_bytes = header_bytes  # of its header list, if not shared (limits.HeldHeaders)
