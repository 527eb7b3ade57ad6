"""One HTTP/2 connection from a gRPC client (RFC 7540), as an asyncio
Protocol.

Everything the frames of one data_received call produce (acks, window
updates, responses of handlers that finish at once) leaves in one
transport.write; output of handlers that finish later is collected until
the event loop's next turn, so responses completing together share a write.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import grpc

from brain.transport import frames
from brain.transport.calls import streaming_request, unary_request
from brain.transport.context import RequestStream, ServicerContext
from brain.transport.hpack import Decoder, Header, HPACKError
from brain.transport.status import OK_TRAILERS, RESPONSE_HEADERS, parse_timeout
from brain.transport.stream import Stream

if TYPE_CHECKING:
    from brain.transport.server import Server

log = logging.getLogger("brain.transport")

# What we let clients send ahead. Windows are credited back as soon as data
# arrives (the data is then ours to buffer), in large steps, so a client never
# waits for a WINDOW_UPDATE while streaming a big request.
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
# Output collected for the event loop's next turn is written at once when it
# passes this size: a burst (one put fanned out to many watchers, encoded by
# many stream tasks in one turn) starts reaching the client while the rest is
# still being encoded.
FLUSH_BYTES = 64 * 1024
_MAX_HEADER_BLOCK = 1024 * 1024
_PARSED_LIMIT = 256

_HEADERS_PREFIX = frames.frame_header(frames.HEADERS, frames.FLAG_END_HEADERS, 0, len(RESPONSE_HEADERS))[:5]
_TRAILERS_PREFIX = frames.frame_header(
    frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, 0, len(OK_TRAILERS)
)[:5]
_FLAGS_DATA = bytes((frames.DATA, 0))


class ConnectionError_(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Request:
    """What a header block says about a call, computed once per distinct
    block (the decoder hands back the same list for a repeated block)."""

    __slots__ = ("path", "timeout", "error")

    def __init__(self, headers: list[Header]) -> None:
        self.path = ""
        self.timeout: float | None = None
        self.error: int | None = None  # an HTTP status to refuse the request with
        method = content_type = None
        for name, value in headers:
            if name == b":path":
                self.path = value.decode("latin-1")
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                self.timeout = parse_timeout(value)
        if method != b"POST":
            self.error = 405
        elif content_type is None or not content_type.startswith(b"application/grpc"):
            self.error = 415
        elif not self.path:
            self.error = 400


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.decoder = Decoder()
        self.streams: dict[int, Stream] = {}
        self.blocked: dict[int, Stream] = {}  # streams waiting for send window
        self.send_window = frames.DEFAULT_WINDOW
        self.peer_initial_window = frames.DEFAULT_WINDOW
        self.peer_max_frame = frames.DEFAULT_MAX_FRAME
        self.recv_unacked = 0
        self.last_sid = 0
        self.paused = False
        self.going_away = False
        self.closed = False
        self._buf = b""
        self._preface = False
        self._out: list[Any] = []
        self._out_bytes = 0
        self._receiving = False
        self._flush_scheduled = False
        self._continuation: tuple[int, int, bytearray] | None = None
        self._parsed: dict[int, tuple[list[Header], _Request]] = {}
        self._handlers: dict[int, Callable[[int, int, bytes], None]] = {
            frames.DATA: self._on_data,
            frames.HEADERS: self._on_headers,
            frames.PRIORITY: self._on_priority,
            frames.RST_STREAM: self._on_rst_stream,
            frames.SETTINGS: self._on_settings,
            frames.PUSH_PROMISE: self._on_push_promise,
            frames.PING: self._on_ping,
            frames.GOAWAY: self._on_goaway,
            frames.WINDOW_UPDATE: self._on_window_update,
            frames.CONTINUATION: self._on_continuation,
        }

    def peer_identities(self) -> list[bytes] | None:
        """The client certificate's common names, as grpcio reports them."""
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            return None
        names = [v.encode() for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        return names or None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        addr = transport.get_extra_info("peername")
        if isinstance(addr, tuple) and len(addr) >= 2:
            host, port = addr[0], addr[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self.server.connections.add(self)
        self.emit(
            frames.settings([
                (frames.SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (frames.SETTINGS_MAX_HEADER_LIST_SIZE, _MAX_HEADER_BLOCK),
            ])
        )
        self.emit(frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._out.clear()
        for st in list(self.streams.values()):
            st.reset()
        self.server.connection_gone(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for st in list(self.streams.values()):
            st.wake_writer()

    def data_received(self, data: bytes) -> None:
        self._receiving = True
        try:
            self._receive(data)
        except ConnectionError_ as e:
            self.fail(e.code, str(e))
        except Exception:
            log.exception("HTTP/2 connection from %s failed", self.peer)
            self.fail(frames.INTERNAL_ERROR, "internal error")
        finally:
            self._receiving = False
            self.flush()

    # output

    def emit(self, data: Any) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if self._receiving:
            return
        if self._out_bytes >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        self._out_bytes = 0
        out = self._out
        if not out:
            return
        if self.transport is None:
            out.clear()
            return
        data = out[0] if len(out) == 1 and isinstance(out[0], bytes) else b"".join(out)
        out.clear()
        self.transport.write(data)

    def unary_response(self, sid: int, payload: bytes) -> bytes:
        """Response headers, one message and OK trailers: three frames."""
        sidb = sid.to_bytes(4, "big")
        n = len(payload)
        return b"".join((
            _HEADERS_PREFIX, sidb, RESPONSE_HEADERS,
            (n + 5).to_bytes(3, "big"), _FLAGS_DATA, sidb, b"\x00", n.to_bytes(4, "big"), payload,
            _TRAILERS_PREFIX, sidb, OK_TRAILERS,
        ))

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY and close."""
        if self.closed:
            return
        log.info("HTTP/2 connection error from %s: %s", self.peer, message)
        self.emit(frames.goaway(self.last_sid, code, message.encode()[:256]))
        self.closed = True
        self.flush()
        for st in list(self.streams.values()):
            st.reset()
        if self.transport is not None:
            self.transport.close()

    def goaway(self) -> None:
        """Graceful shutdown: no new calls; close once the current ones end."""
        if self.going_away or self.closed:
            return
        self.going_away = True
        self.emit(frames.goaway(self.last_sid, frames.NO_ERROR))
        if not self.streams:
            self.flush()
            if self.transport is not None:
                self.transport.close()

    def stream_closed(self, st: Stream) -> None:
        self.streams.pop(st.sid, None)
        self.blocked.pop(st.sid, None)
        st.cleanup()
        if self.going_away and not self.streams and self.transport is not None:
            self.flush()
            self.transport.close()

    # input

    def _receive(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self._buf + data if self._buf else data
        pos = 0
        if not self._preface:
            if len(buf) < len(frames.PREFACE):
                if not frames.PREFACE.startswith(buf):
                    raise ConnectionError_(frames.PROTOCOL_ERROR, "bad connection preface")
                self._buf = buf
                return
            if not buf.startswith(frames.PREFACE):
                raise ConnectionError_(frames.PROTOCOL_ERROR, "bad connection preface")
            self._preface = True
            pos = len(frames.PREFACE)
        end = len(buf)
        unpack = frames.HEADER.unpack_from
        handlers = self._handlers
        while end - pos >= 9:
            lt, flags, sid = unpack(buf, pos)
            length = lt >> 8
            if length > frames.DEFAULT_MAX_FRAME:
                raise ConnectionError_(frames.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
            stop = pos + 9 + length
            if stop > end:
                break
            payload = buf[pos + 9:stop]
            pos = stop
            ftype = lt & 0xFF
            if self._continuation is not None and ftype != frames.CONTINUATION:
                raise ConnectionError_(frames.PROTOCOL_ERROR, "expected CONTINUATION")
            handler = handlers.get(ftype)
            if handler is not None:  # unknown frame types are ignored
                handler(flags, sid & 0x7FFFFFFF, payload)
            if self.closed:
                return
        self._buf = buf[pos:] if pos < end else b""

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & frames.FLAG_PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ConnectionError_(frames.PROTOCOL_ERROR, "bad padding")
        return payload[1:len(payload) - payload[0]]

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flow:
            self.recv_unacked += flow
            if self.recv_unacked >= CONNECTION_WINDOW // 4:
                self.emit(frames.window_update(0, self.recv_unacked))
                self.recv_unacked = 0
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid:
                raise ConnectionError_(frames.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we have ended; the client had not seen that yet
        if st.recv_ended:
            st.recv_ended = True
            self.emit(frames.rst_stream(sid, frames.STREAM_CLOSED))
            st.reset()
            return
        if flags & frames.FLAG_PADDED:
            payload = self._unpad(flags, payload)
        end_stream = flags & frames.FLAG_END_STREAM
        if not end_stream and flow:
            st.recv_unacked += flow
            if st.recv_unacked >= STREAM_WINDOW // 4:
                self.emit(frames.window_update(sid, st.recv_unacked))
                st.recv_unacked = 0
        if payload:
            self._feed(st, payload)
        if end_stream and not st.closed:
            self._end_of_request(st)

    def _feed(self, st: Stream, payload: bytes) -> None:
        """Split the stream's bytes into gRPC messages (a 5-byte prefix:
        compressed flag, big-endian length)."""
        limit = self.server.max_receive
        buf = st.recv
        if not buf and len(payload) >= 5 and payload[0] == 0:
            n = int.from_bytes(payload[1:5], "big")
            if n + 5 == len(payload) and n <= limit:
                self._deliver(st, payload[5:])
                return
        buf += payload
        while len(buf) >= 5 and not st.closed:
            n = int.from_bytes(buf[1:5], "big")
            if n > limit:
                buf.clear()
                self._abort(st, grpc.StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max ({n} vs. {limit})")
                return
            if buf[0] != 0:
                buf.clear()
                self._abort(st, grpc.StatusCode.INTERNAL, "Compressed message but no grpc-encoding was negotiated")
                return
            if len(buf) < n + 5:
                return
            message = bytes(buf[5:n + 5])
            del buf[:n + 5]
            self._deliver(st, message)

    def _deliver(self, st: Stream, message: bytes) -> None:
        if st.requests is not None:
            st.requests.push(message)
        elif st.message is None:
            st.message = message
        else:
            self._abort(st, grpc.StatusCode.UNIMPLEMENTED, "received more than one request message for a unary call")

    def _abort(self, st: Stream, code: grpc.StatusCode, details: str) -> None:
        task = st.task
        st.finish(code, details)
        if task is not None and not task.done():
            task.cancel()

    def _end_of_request(self, st: Stream) -> None:
        st.recv_ended = True
        if st.recv:
            self._abort(st, grpc.StatusCode.INTERNAL, "request ended inside a message")
            return
        if st.requests is not None:
            st.requests.end()
            return
        if st.handler is None:
            return  # still being resolved; dispatch follows
        self._start_unary(st)

    def _start_unary(self, st: Stream) -> None:
        if st.message is None:
            self._abort(st, grpc.StatusCode.UNIMPLEMENTED, "no request message for a unary call")
            return
        st.task = self.loop.create_task(unary_request(st, st.handler, st.message))
        st.message = None

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "HEADERS on a server or zero stream id")
        if flags & frames.FLAG_PADDED:
            payload = self._unpad(flags, payload)
        if flags & frames.FLAG_PRIORITY:
            payload = payload[5:]
        if not flags & frames.FLAG_END_HEADERS:
            self._continuation = (sid, flags, bytearray(payload))
            return
        self._header_block(sid, flags, payload)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        cont = self._continuation
        if cont is None or cont[0] != sid:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "unexpected CONTINUATION")
        cont[2].extend(payload)
        if len(cont[2]) > _MAX_HEADER_BLOCK:
            raise ConnectionError_(frames.ENHANCE_YOUR_CALM, "header block too large")
        if flags & frames.FLAG_END_HEADERS:
            self._continuation = None
            self._header_block(sid, cont[1], bytes(cont[2]))

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HPACKError as e:
            raise ConnectionError_(frames.COMPRESSION_ERROR, f"HPACK: {e}") from None
        end_stream = flags & frames.FLAG_END_STREAM
        st = self.streams.get(sid)
        if st is not None:  # trailers from the client: only an end is allowed
            if not end_stream:
                raise ConnectionError_(frames.PROTOCOL_ERROR, "second HEADERS without END_STREAM")
            if not st.recv_ended:
                self._end_of_request(st)
            return
        if sid <= self.last_sid:
            raise ConnectionError_(frames.STREAM_CLOSED, "HEADERS on a closed stream")
        self.last_sid = sid
        if self.going_away:
            self.emit(frames.rst_stream(sid, frames.REFUSED_STREAM))
            return
        parsed = self._parsed.get(id(headers))
        if parsed is None or parsed[0] is not headers:
            if len(self._parsed) >= _PARSED_LIMIT:
                self._parsed.clear()
            parsed = (headers, _Request(headers))
            self._parsed[id(headers)] = parsed
        request = parsed[1]
        if request.error is not None:
            self._refuse(sid, request.error, end_stream)
            return
        st = Stream(sid, self, headers, self.peer_initial_window)
        self.streams[sid] = st
        if end_stream:
            st.recv_ended = True
        deadline = None
        if request.timeout is not None:
            deadline = time.monotonic() + request.timeout
            st.timer = self.loop.call_later(request.timeout, self._deadline, st)
        handler = self.server.cached_handler(request.path)
        if handler is None:
            self.loop.create_task(self._resolve(st, request.path, deadline))
            return
        self._dispatch(st, handler, deadline)

    async def _resolve(self, st: Stream, path: str, deadline: float | None) -> None:
        try:
            handler = await self.server.resolve(path, st.metadata())
        except Exception:
            log.exception("resolving %s", path)
            handler = None
        if st.closed:
            return
        if handler is None:
            st.finish(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        self._dispatch(st, handler, deadline)
        self.flush()

    def _dispatch(self, st: Stream, handler: grpc.RpcMethodHandler, deadline: float | None) -> None:
        st.handler = handler
        st.ctx = ServicerContext(st, deadline, handler.response_serializer)
        if handler.request_streaming:
            st.requests = RequestStream(handler.request_deserializer)
            st.task = self.loop.create_task(streaming_request(st, handler))
            if st.message is not None:  # arrived while resolving
                st.requests.push(st.message)
                st.message = None
            if st.recv_ended:
                st.requests.end()
        elif st.recv_ended:
            self._start_unary(st)

    def _refuse(self, sid: int, status: int, end_stream: int) -> None:
        block = b"\x08\x00" + bytes((3,)) + str(status).encode()  # :status, literal (static name 8)
        self.emit(frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, sid, block))
        if not end_stream:
            self.emit(frames.rst_stream(sid, frames.NO_ERROR))

    def _deadline(self, st: Stream) -> None:
        st.timer = None
        if st.closed:
            return
        st.cancelled = True
        self._abort(st, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        self.flush()

    def _on_priority(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 5:
            raise ConnectionError_(frames.FRAME_SIZE_ERROR, "PRIORITY of bad length")

    def _on_rst_stream(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or len(payload) != 4:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "bad RST_STREAM")
        st = self.streams.get(sid)
        if st is not None:
            st.recv_ended = True
            st.reset()

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & frames.FLAG_ACK:
            if payload:
                raise ConnectionError_(frames.FRAME_SIZE_ERROR, "SETTINGS ack with payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(frames.FRAME_SIZE_ERROR, "SETTINGS of bad length")
        grew = False
        for key, value in frames.parse_settings(payload):
            if key == frames.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise ConnectionError_(frames.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                grew = delta > 0
            elif key == frames.SETTINGS_MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= 16777215:
                    raise ConnectionError_(frames.PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
            elif key == frames.SETTINGS_ENABLE_PUSH and value > 1:
                raise ConnectionError_(frames.PROTOCOL_ERROR, "bad enable push")
            # header table size: our encoder uses no dynamic table, so any size fits
        self.emit(frames.SETTINGS_ACK)
        if grew:
            self._pump_blocked()

    def _on_push_promise(self, flags: int, sid: int, payload: bytes) -> None:
        raise ConnectionError_(frames.PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0 or len(payload) != 8:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "bad PING")
        if not flags & frames.FLAG_ACK:
            # any rate is fine: kube-apiserver's keepalives must never cost the connection
            self.emit(frames.frame(frames.PING, frames.FLAG_ACK, 0, payload))

    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(frames.PROTOCOL_ERROR, "GOAWAY on a stream")
        # the client closes the connection itself once its calls are done

    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(frames.FRAME_SIZE_ERROR, "WINDOW_UPDATE of bad length")
        increment = frames.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionError_(frames.PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self.send_window += increment
            if self.send_window > frames.MAX_WINDOW:
                raise ConnectionError_(frames.FLOW_CONTROL_ERROR, "connection window overflow")
            self._pump_blocked()
            return
        st = self.streams.get(sid)
        if st is None:
            return
        if increment == 0 or st.send_window + increment > frames.MAX_WINDOW:
            self.emit(frames.rst_stream(sid, frames.PROTOCOL_ERROR if increment == 0 else frames.FLOW_CONTROL_ERROR))
            st.recv_ended = True
            st.reset()
            return
        st.send_window += increment
        if sid in self.blocked:
            st.pump()

    def _pump_blocked(self) -> None:
        for st in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            st.pump()
