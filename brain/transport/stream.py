"""One gRPC call on one HTTP/2 stream: the request messages arriving, the
response messages and trailers leaving under flow control."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc

from brain.transport import frames
from brain.transport.context import RequestStream, ServicerContext
from brain.transport.hpack import Header
from brain.transport.status import RESPONSE_HEADERS, trailers
from brain.wire import Pieces

if TYPE_CHECKING:
    from brain.transport.connection import Connection

_HEADERS_FRAME = frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, 0, RESPONSE_HEADERS)
_MAX_DETAILS = 8192  # keeps the trailers within one frame of any peer


class StreamClosed(Exception):
    """The call ended (client cancel, deadline, connection loss) before a
    write could be sent."""


class Stream:
    __slots__ = (
        "sid", "conn", "headers", "ctx", "requests", "task", "recv", "recv_ended", "recv_unacked",
        "send_window", "pending", "trailers", "headers_sent", "closed", "cancelled", "timer", "drained",
        "handler", "message",
    )

    def __init__(self, sid: int, conn: Connection, headers: list[Header], send_window: int) -> None:
        self.sid = sid
        self.conn = conn
        self.headers = headers
        self.ctx: ServicerContext | None = None
        self.requests: RequestStream | None = None  # for client-streaming calls
        self.task: asyncio.Task[None] | None = None
        self.recv = bytearray()
        self.recv_ended = False
        self.recv_unacked = 0
        self.send_window = send_window
        self.pending: deque[memoryview] = deque()  # response bytes waiting for window
        self.trailers: bytes | None = None  # trailers to send once pending is out
        self.headers_sent = False
        self.closed = False
        self.cancelled = False
        self.timer: asyncio.TimerHandle | None = None
        self.drained: asyncio.Future[None] | None = None
        self.handler: Any = None
        self.message: bytes | None = None  # the one request of a unary-request call

    def method_name(self) -> str:
        for n, v in self.headers:
            if n == b":path":
                return v.decode("latin-1")
        return "?"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers if not n.startswith(b":")
        )

    # sending

    def send_headers(self) -> None:
        if not self.headers_sent and not self.closed:
            self.headers_sent = True
            self.conn.emit(_HEADERS_FRAME[:5] + self.sid.to_bytes(4, "big") + RESPONSE_HEADERS)

    def send_unary(self, payload: bytes) -> None:
        """Headers, one message and OK trailers; in one piece when the
        windows allow, as for nearly every call."""
        if self.closed:
            return
        conn = self.conn
        n = len(payload) + 5
        if (
            not self.headers_sent and n <= conn.send_window and n <= self.send_window
            and n <= conn.peer_max_frame and not self.pending
        ):
            conn.send_window -= n
            self.send_window -= n
            self.headers_sent = True
            conn.emit(conn.unary_response(self.sid, payload))
            self._close()
            return
        self.send_headers()
        self.queue(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        self.finish(grpc.StatusCode.OK, None)

    def send_pieces(self, message: Pieces) -> None:
        """Like send_unary, for a message in pieces: each is queued as it is."""
        if self.closed:
            return
        self.send_headers()
        self.pending.append(memoryview(b"\x00" + message.size.to_bytes(4, "big")))
        self.pending.extend(memoryview(p) for p in message.parts if p)
        self.finish(grpc.StatusCode.OK, None)

    async def write(self, payload: bytes) -> None:
        if self.closed:
            raise StreamClosed("the call has ended")
        self.send_headers()
        self.queue(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        while (self.pending or self.conn.paused) and not self.closed:
            self.drained = asyncio.get_running_loop().create_future()
            try:
                await self.drained
            finally:
                self.drained = None
        if self.closed and self.cancelled:
            raise StreamClosed("the call has ended")

    def queue(self, data: bytes) -> None:
        self.pending.append(memoryview(data))
        self.pump()

    def pump(self) -> None:
        """Send what the windows allow; then the trailers, if all is out."""
        conn = self.conn
        pending = self.pending
        header = frames.frame_header
        while pending:
            chunk = pending[0]
            n = min(len(chunk), conn.send_window, self.send_window, conn.peer_max_frame)
            if n <= 0:
                conn.blocked[self.sid] = self
                return
            if n == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[n:]
                chunk = chunk[:n]
            conn.send_window -= n
            self.send_window -= n
            conn.emit(header(frames.DATA, 0, self.sid, n))
            conn.emit(chunk)
        conn.blocked.pop(self.sid, None)
        if self.trailers is not None:
            conn.emit(frames.frame_header(frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, self.sid, len(self.trailers)))
            conn.emit(self.trailers)
            self._close()
        else:
            self.wake_writer()

    def wake_writer(self) -> None:
        d = self.drained
        if d is not None and not d.done() and not self.pending and not self.conn.paused:
            d.set_result(None)

    def finish(self, code: grpc.StatusCode | int, details: str | None) -> None:
        """End the call with this status, after any response still queued."""
        if self.closed or self.trailers is not None:
            return
        if details and len(details) > _MAX_DETAILS:
            details = details[:_MAX_DETAILS]
        block = trailers(code, details)
        if not self.headers_sent:  # trailers-only response
            self.headers_sent = True
            block = RESPONSE_HEADERS + block
        self.trailers = block
        self.pump()

    def _close(self) -> None:
        self.closed = True
        conn = self.conn
        if not self.recv_ended:
            # the client may still be sending: tell it to stop (as gRPC servers do)
            conn.emit(frames.rst_stream(self.sid, frames.NO_ERROR))
        conn.stream_closed(self)

    def reset(self) -> None:
        """The client cancelled (RST_STREAM) or the connection is gone."""
        if self.closed:
            return
        self.closed = True
        self.cancelled = True
        self.pending.clear()
        self.conn.stream_closed(self)
        if self.requests is not None:
            self.requests.end(asyncio.CancelledError())
        d = self.drained
        if d is not None and not d.done():
            d.set_result(None)
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def cleanup(self) -> None:
        """Called by the connection once the stream is closed either way."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.ctx is not None and self.ctx._callbacks:
            self.ctx._run_callbacks()
