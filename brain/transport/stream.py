"""One gRPC call on one HTTP/2 stream: its request messages arriving, and
its responses and status leaving through the HTTP/2 core, which holds them
until flow control lets them out."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol

import grpc

from brain.transport.context import RequestStream, ServicerContext
from brain.transport.h2.core import H2Connection
from brain.transport.h2.hpack import Header
from brain.transport.status import OK_TRAILERS, RESPONSE_HEADERS, trailers
from brain.wire import Pieces

_MAX_DETAILS = 8192  # keeps the trailers within one frame of any peer
# A message's 5-byte prefix (compressed flag 0, 4-byte length) is its
# length as a 5-byte big-endian number: lengths are below 2**32.


class StreamClosed(Exception):
    """The call ended (client cancel, deadline, connection loss) before a
    write could be sent."""


class CallOwner(Protocol):
    """What a call needs of the connection it runs on."""

    core: H2Connection
    peer: str

    def writes_paused(self) -> bool: ...

    def peer_identities(self) -> list[bytes] | None: ...

    def call_ended(self, stream: Stream) -> None: ...


class Stream:
    __slots__ = (
        "sid", "owner", "core", "headers", "ctx", "requests", "task", "recv", "recv_credited", "recv_ended",
        "headers_sent", "ending", "closed", "cancelled", "timer", "drained", "handler", "message", "done_callbacks",
    )

    def __init__(self, sid: int, owner: CallOwner, headers: list[Header], recv_ended: bool) -> None:
        self.sid = sid
        self.owner = owner
        self.core = owner.core
        self.headers = headers
        self.ctx: ServicerContext | None = None
        self.requests: RequestStream | None = None  # for client-streaming calls
        self.task: asyncio.Task[None] | None = None
        self.recv: bytearray | None = None  # a request message not yet complete (made when one is split)
        self.recv_credited = 0  # bytes of recv already credited back to the client
        self.recv_ended = recv_ended
        self.headers_sent = False
        self.ending = False  # the status is queued behind response bytes
        self.closed = False
        self.cancelled = False
        self.timer: asyncio.TimerHandle | None = None
        self.drained: asyncio.Future[None] | None = None
        self.handler: Any = None
        self.message: bytes | None = None  # the one request of a unary-request call
        self.done_callbacks: list[Callable[[], None]] | None = None

    def method_name(self) -> str:
        for n, v in self.headers:
            if n == b":path":
                return v.decode("latin-1")
        return "?"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers if not n.startswith(b":")
        )

    def peer(self) -> str:
        return self.owner.peer

    def peer_identities(self) -> list[bytes] | None:
        return self.owner.peer_identities()

    # sending

    def send_headers(self) -> None:
        if not self.headers_sent and not self.closed:
            self.headers_sent = True
            self.core.send_headers(self.sid, RESPONSE_HEADERS)

    def send_unary(self, payload: bytes) -> None:
        """Headers, one message and OK trailers; in one piece when the
        windows allow, as for nearly every call."""
        if self.closed:
            return
        prefix = len(payload).to_bytes(5, "big")
        if not self.headers_sent and self.core.send_response(self.sid, RESPONSE_HEADERS, prefix, payload, OK_TRAILERS):
            self.headers_sent = True
            self.closed = True
            self.owner.call_ended(self)
            return
        self.send_headers()
        self.core.send_data(self.sid, (prefix, payload))
        self.finish(grpc.StatusCode.OK, None)

    def send_pieces(self, message: Pieces) -> None:
        """Like send_unary, for a message in pieces: each is queued as it is."""
        if self.closed:
            return
        self.send_headers()
        self.core.send_data(self.sid, (message.size.to_bytes(5, "big"), *message.parts))
        self.finish(grpc.StatusCode.OK, None)

    async def write(self, payload: bytes) -> None:
        if self.closed:
            raise StreamClosed("the call has ended")
        self.send_headers()
        self.core.send_data(self.sid, (len(payload).to_bytes(5, "big"), payload))
        while (self.core.has_pending(self.sid) or self.owner.writes_paused()) and not self.closed:
            self.drained = asyncio.get_running_loop().create_future()
            try:
                await self.drained
            finally:
                self.drained = None
        if self.closed and self.cancelled:
            raise StreamClosed("the call has ended")

    def wake_writer(self) -> None:
        d = self.drained
        if d is not None and not d.done() and not self.core.has_pending(self.sid) and not self.owner.writes_paused():
            d.set_result(None)

    def finish(self, code: grpc.StatusCode | int, details: str | None) -> None:
        """End the call with this status, after any response still queued."""
        if self.closed or self.ending:
            return
        if details and len(details) > _MAX_DETAILS:
            details = details[:_MAX_DETAILS]
        block = trailers(code, details)
        if not self.headers_sent:  # trailers-only response
            self.headers_sent = True
            block = RESPONSE_HEADERS + block
        self.ending = True
        if self.core.end_stream(self.sid, block):
            self._ended()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        """End the call with an error status and stop its handler."""
        task = self.task
        self.finish(code, details)
        if task is not None and not task.done():
            task.cancel()

    def response_ended(self) -> None:
        """The core sent the last of the response."""
        if not self.closed:
            self._ended()

    def _ended(self) -> None:
        self.closed = True
        self.owner.call_ended(self)

    def reset(self) -> None:
        """The client cancelled (RST_STREAM) or the connection is gone."""
        if self.closed:
            return
        self.closed = True
        self.cancelled = True
        # a handler still running would answer no one: its header list, which
        # the core no longer counts, is let go at once
        self.headers = []
        self.owner.call_ended(self)
        if self.requests is not None:
            self.requests.end(asyncio.CancelledError())
        d = self.drained
        if d is not None and not d.done():
            d.set_result(None)
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Run callback once the call is over either way (at once if it is)."""
        if self.closed:
            callback()
        elif self.done_callbacks is None:
            self.done_callbacks = [callback]
        else:
            self.done_callbacks.append(callback)

    def run_done_callbacks(self) -> None:
        callbacks, self.done_callbacks = self.done_callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:  # one callback must not stop the others
                pass
