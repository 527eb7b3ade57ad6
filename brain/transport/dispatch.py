"""gRPC over the HTTP/2 core's events: requests become calls, found
through the server's handlers; request bodies are split into gRPC messages;
deadlines end calls; requests that are not gRPC calls are refused with an
HTTP status (the gRPC over HTTP/2 protocol description)."""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Awaitable, Callable, Protocol

import grpc

from brain.transport.calls import streaming_request, unary_request
from brain.transport.context import RequestStream, ServicerContext
from brain.transport.h2.core import H2Connection
from brain.transport.h2.frames import PROTOCOL_ERROR
from brain.transport.h2.events import (
    ConnectionTerminated, DataReceived, Event, RequestReceived, StreamDrained, StreamEnded, StreamReset,
)
from brain.transport.h2.hpack import Header, literal_indexed_name
from brain.transport.messages import MessageReader
from brain.transport.stream import Stream
from brain.transport.timeout import grpc_timeout

log = logging.getLogger("brain.transport")

_PARSED_LIMIT = 256


# path -> HTTP status, content type, body: the server's answers to GETs
HttpHandler = Callable[[str], Awaitable[tuple[int, str, bytes]]]


class HandlerSource(Protocol):
    """What the gRPC layer needs of the server: its handlers and limits."""

    max_receive: int
    http_handler: HttpHandler | None

    def cached_handler(self, method: str) -> grpc.RpcMethodHandler | None: ...

    async def resolve(self, method: str, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcMethodHandler | None: ...


class Link(Protocol):
    """What the gRPC layer needs of the connection's adapter."""

    peer: str

    def writes_paused(self) -> bool: ...

    def peer_identities(self) -> list[bytes] | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Request:
    """What a header block says about a call, computed once per distinct
    block (the decoder hands back the same list for a repeated block)."""

    __slots__ = ("path", "method", "timeout", "error", "malformed", "handler")

    def __init__(self, headers: list[Header]) -> None:
        self.handler: grpc.RpcMethodHandler | None = None  # once the server has resolved the path
        self.path = ""
        self.method: bytes | None = None
        self.timeout: float | None = None
        self.error: int | None = None  # an HTTP status to refuse the request with
        self.malformed = False  # a grpc-timeout that does not parse: refused with RST_STREAM(PROTOCOL_ERROR)
        content_type = None
        for name, value in headers:
            if name == b":path":
                self.path = value.decode("latin-1")
            elif name == b":method":
                self.method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                try:
                    self.timeout = grpc_timeout(value)
                except ValueError:
                    self.malformed = True
        if self.method != b"POST":
            self.error = 405
        elif content_type is None or not content_type.startswith(b"application/grpc"):
            self.error = 415
        elif not self.path:
            self.error = 400


def status_block(status: int) -> bytes:
    """A header block of :status alone (a literal with static name 8)."""
    return literal_indexed_name(8, str(status).encode())


def http_response_block(status: int, content_type: str, length: int) -> bytes:
    """:status, content-type and content-length (static names 8, 31, 28)."""
    return (
        status_block(status) + literal_indexed_name(31, content_type.encode("latin-1"))
        + literal_indexed_name(28, str(length).encode())
    )


class GrpcSession:
    """The calls of one connection."""

    def __init__(self, core: H2Connection, link: Link, handlers: HandlerSource) -> None:
        self.core = core
        self.link = link
        self.handlers = handlers
        self.max_receive = handlers.max_receive
        self.messages = MessageReader(core, self.max_receive)
        self.peer = link.peer
        self.loop = asyncio.get_running_loop()
        self.calls: dict[int, Stream] = {}
        self.http_gets: set[int] = set()  # streams of plain GETs being answered
        self._parsed: dict[int, tuple[list[Header], Request]] = {}

    # CallOwner

    def writes_paused(self) -> bool:
        return self.link.writes_paused()

    def peer_identities(self) -> list[bytes] | None:
        return self.link.peer_identities()

    def call_ended(self, st: Stream) -> None:
        self.calls.pop(st.sid, None)
        left = self.messages.drop_partial(st) if st.recv else 0
        if st.requests is not None:
            left += st.requests.drop()
        if left:
            self.core.consumed(st.sid, left)
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if st.done_callbacks:
            st.run_done_callbacks()
        if self.core.going_away and not self.calls and not self.http_gets:
            self.link.flush()
            self.link.close()

    # connection-wide

    def handle(self, events: list[Event]) -> None:
        calls = self.calls
        for ev in events:
            if isinstance(ev, RequestReceived):
                self._request(ev)
            elif isinstance(ev, DataReceived):
                st = calls.get(ev.stream_id)
                if st is not None:
                    self._received(st, ev.data, ev.end_stream)
                elif ev.data:
                    self.core.consumed(ev.stream_id, len(ev.data))
            elif isinstance(ev, StreamEnded):
                st = calls.get(ev.stream_id)
                if st is not None:
                    st.response_ended()
                elif ev.stream_id in self.http_gets:
                    self._http_get_done(ev.stream_id)
            elif isinstance(ev, StreamDrained):
                st = calls.get(ev.stream_id)
                if st is not None:
                    st.wake_writer()
            elif isinstance(ev, StreamReset):
                st = calls.get(ev.stream_id)
                task = None
                if st is not None:
                    st.recv_ended = True
                    task = st.task
                    st.reset()
                elif ev.stream_id in self.http_gets:
                    self._http_get_done(ev.stream_id)
                if task is not None and not task.done():
                    # the reset counts against the client until its handler has stopped
                    task.add_done_callback(self._reset_handled)
                else:
                    self.core.reset_handled()
            elif isinstance(ev, ConnectionTerminated):
                self.connection_lost()
        self.core.credit_connection()

    def _reset_handled(self, task: asyncio.Task[None]) -> None:
        self.core.reset_handled()

    def writable(self) -> None:
        for st in list(self.calls.values()):
            st.wake_writer()

    def goaway(self) -> None:
        """Graceful shutdown: no new calls; close once the current ones end."""
        self.core.goaway()
        if not self.calls and not self.http_gets:
            self.link.flush()
            self.link.close()

    def connection_lost(self) -> None:
        self.http_gets.clear()
        for st in list(self.calls.values()):
            st.reset()

    # requests

    def _request(self, ev: RequestReceived) -> None:
        headers = ev.headers
        if ev.header_bytes:  # a header list of this request alone: not worth remembering
            request = Request(headers)
        else:
            parsed = self._parsed.get(id(headers))
            if parsed is None or parsed[0] is not headers:
                if len(self._parsed) >= _PARSED_LIMIT:
                    self._parsed.clear()
                parsed = (headers, Request(headers))
                self._parsed[id(headers)] = parsed
            request = parsed[1]
        sid = ev.stream_id
        if request.malformed:
            self.core.refused_by_caller()
            self.core.reset_stream(sid, PROTOCOL_ERROR)
            if ev.data:
                self.core.consumed(sid, len(ev.data))
            return
        if request.error is not None:
            if ev.data:
                self.core.consumed(sid, len(ev.data))
            if request.method == b"GET" and self.handlers.http_handler is not None:
                self.http_gets.add(sid)
                self.loop.create_task(self._http_get(sid, request.path.split("?", 1)[0], self.handlers.http_handler))
                return
            self.core.refused_by_caller()
            self.core.send_headers(sid, status_block(request.error), end_stream=True)
            return
        st = Stream(sid, self, headers, ev.end_stream and ev.data is None)
        self.calls[sid] = st
        deadline = None
        if request.timeout is not None:
            if request.timeout <= 0:  # a deadline already past: the handler is not run
                self.core.refused_by_caller()
                st.finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
                if ev.data:
                    self.core.consumed(sid, len(ev.data))
                return
            deadline = time.monotonic() + request.timeout
            st.timer = self.loop.call_later(request.timeout, self._deadline, st)
        handler = request.handler
        if handler is None:
            handler = request.handler = self.handlers.cached_handler(request.path)
            if handler is None:
                # the call's task until the handler's: a reset stops it, and counts until it has
                st.task = self.loop.create_task(self._resolve(st, request.path, deadline))
                if ev.data is not None:
                    self._received(st, ev.data, ev.end_stream)
                return
        data = ev.data
        if data is not None and ev.end_stream and not handler.request_streaming:
            n = len(data) - 5
            # the 5-byte prefix as one number: flag 0 (not compressed) and length n
            if n >= 0 and int.from_bytes(data[:5], "big") == n and n <= self.max_receive:
                # the common case in short: a unary call's one message, whole, read with its headers
                st.handler = handler
                st.ctx = ServicerContext(st, deadline, handler.response_serializer)
                st.recv_ended = True
                st.task = self.loop.create_task(unary_request(st, handler, data[5:]))
                # consumed, of a stream the client ended: only the connection's
                # credit is due, sent once for the whole read (in handle)
                self.core.received.unacked += n + 5
                return
        self._dispatch(st, handler, deadline)
        if data is not None:
            self._received(st, data, ev.end_stream)

    def _received(self, st: Stream, data: bytes, end_stream: bool) -> None:
        if data:
            self.messages.feed(st, data)
        if end_stream and not st.closed:
            self._end_of_request(st)

    async def _http_get(self, sid: int, path: str, handler: HttpHandler) -> None:
        """A plain GET, as of a probe or a Prometheus scrape: answered from
        the server's HTTP handler, beside the gRPC calls."""
        try:
            status, content_type, body = await handler(path)
        except Exception:
            log.exception("serving GET %s", path)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"Internal Server Error\n"
        core = self.core
        ended = core.send_headers(sid, http_response_block(status, content_type, len(body)), end_stream=not body)
        if not ended:
            core.send_data(sid, (body,))
            ended = core.end_stream(sid, None)
        self.link.flush()
        if ended or not core.is_open(sid):
            self._http_get_done(sid)
        # else the core reports the end once flow control has let the body out

    def _http_get_done(self, sid: int) -> None:
        self.http_gets.discard(sid)
        if self.core.going_away and not self.calls and not self.http_gets:
            self.link.flush()
            self.link.close()

    async def _resolve(self, st: Stream, path: str, deadline: float | None) -> None:
        try:
            handler = await self.handlers.resolve(path, st.metadata())
        except Exception:
            log.exception("resolving %s", path)
            handler = None
        if st.closed:
            return
        if handler is None:
            st.finish(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        self._dispatch(st, handler, deadline)
        self.link.flush()

    def _dispatch(self, st: Stream, handler: grpc.RpcMethodHandler, deadline: float | None) -> None:
        st.handler = handler
        st.ctx = ServicerContext(st, deadline, handler.response_serializer)
        early = st.requests  # messages that arrived while the method was looked up
        if handler.request_streaming:
            if early is None:
                early = st.requests = RequestStream(handler.request_deserializer, functools.partial(self.core.consumed, st.sid))
            else:
                early.resolved(handler.request_deserializer)
            st.task = self.loop.create_task(streaming_request(st, handler))
            if st.recv_ended:
                early.end()
            return
        if early is not None:
            st.requests = None
            held = early.take_all()
            if len(held) > 1:
                st.abort(grpc.StatusCode.UNIMPLEMENTED, "received more than one request message for a unary call")
                return
            st.message = held[0]
        if st.recv_ended:
            self._start_unary(st)

    def _deadline(self, st: Stream) -> None:
        st.timer = None
        if st.closed:
            return
        st.cancelled = True
        st.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        self.link.flush()

    def _end_of_request(self, st: Stream) -> None:
        st.recv_ended = True
        if st.recv:
            st.abort(grpc.StatusCode.INTERNAL, "request ended inside a message")
            return
        if st.requests is not None:
            st.requests.end()
            return
        if st.handler is None:
            return  # still being resolved; dispatch follows
        self._start_unary(st)

    def _start_unary(self, st: Stream) -> None:
        if st.message is None:
            st.abort(grpc.StatusCode.UNIMPLEMENTED, "no request message for a unary call")
            return
        st.task = self.loop.create_task(unary_request(st, st.handler, st.message))
        st.message = None
