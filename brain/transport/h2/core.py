"""The HTTP/2 connection state machine of a server (RFC 7540), sans IO.

`receive(data)` parses a client's bytes and returns events; the send
methods queue frames; `data_to_send()` hands out what is queued. Pings
and settings are acknowledged here, flow-control credit is given back here
as the layer above reports request bytes consumed (`consumed`), and
responses wait here for send window. An optional `on_output` hook is
told the amount queued when output starts waiting and whenever it has
reached `output_limit` bytes, so an adapter can decide when to write
without polling.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable

from brain.transport.h2 import frames
from brain.transport.h2.control import ControlFrames, ProtocolError
from brain.transport.h2.events import (
    ConnectionTerminated, DataReceived, Event, RequestReceived, StreamDrained, StreamEnded,
)
from brain.transport.h2.fields import MalformedRequest, check_request
from brain.transport.h2.hpack import Decoder, HeaderListTooLarge, HPACKError
from brain.transport.h2.keepalive import PingPolicy
from brain.transport.h2.limits import MAX_QUEUED_CONTROL, Budget, HeaderAccount, HeldHeaders, calm
from brain.transport.h2.reader import FrameReader, FramingError, unpad
from brain.transport.h2.settings import LocalSettings, PeerSettings
from brain.transport.h2.streams import Chunk, H2Stream
from brain.transport.h2.windows import ReceiveWindow

# flags tested on every frame, as plain names
_END_STREAM = frames.FLAG_END_STREAM
_PADDED = frames.FLAG_PADDED
_PRIORITY = frames.FLAG_PRIORITY
_PREFIX_CACHE_LIMIT = 64


class H2Connection(ControlFrames):
    def __init__(
        self, local: LocalSettings, on_output: Callable[[int], None] | None = None, output_limit: int = 1 << 16,
        server_headers: HeldHeaders | None = None,
    ) -> None:
        """server_headers: the header bytes held by all of a server's
        connections, shared by their cores."""
        self.local = local
        self.peer = PeerSettings()
        self.decoder = Decoder(max_header_list=local.max_header_list, check=check_request)
        self.streams: dict[int, H2Stream] = {}
        self.blocked: dict[int, H2Stream] = {}  # streams waiting for send window
        self.send_window = frames.DEFAULT_WINDOW
        self.received = ReceiveWindow(local.connection_window)
        self.last_stream_id = 0
        self.going_away = False
        self.terminated = False
        self._stream_credit_step = local.initial_window >> 2
        self._out: list[Chunk] = []
        self._out_bytes = 0
        self._on_output = on_output
        self._output_limit = output_limit
        self._events: list[Event] = []
        self._last_request: RequestReceived | None = None  # the latest of this read's requests
        self._headers_prefix: dict[bytes, bytes] = {}
        self._trailers_prefix: dict[bytes, bytes] = {}
        self.budget = Budget()
        self.held_headers = HeaderAccount(server_headers)
        self.ping_policy: PingPolicy | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.wrote_since_ping = False
        self.reader = FrameReader({
            frames.DATA: self._on_data,
            frames.HEADERS: self._on_headers,
            frames.PRIORITY: self._on_priority,
            frames.RST_STREAM: self._on_rst_stream,
            frames.SETTINGS: self._on_settings,
            frames.PUSH_PROMISE: self._on_push_promise,
            frames.PING: self._on_ping,
            frames.GOAWAY: self._on_goaway,
            frames.WINDOW_UPDATE: self._on_window_update,
        }, local.max_header_list, self.budget.idle_frame)

    # output

    def initiate(self) -> None:
        """Queue the server's preface (its SETTINGS), sent before any input."""
        self.emit(self.local.preface())

    def emit(self, data: Chunk) -> None:
        """Queue bytes for the peer."""
        out = self._out
        out.append(data)
        self._out_bytes += len(data)
        if (len(out) == 1 or self._out_bytes >= self._output_limit) and self._on_output is not None:
            self._on_output(self._out_bytes)

    def data_to_send(self, limit: int | None = None) -> bytes:
        """The queued bytes, or their first `limit` bytes (the rest stays
        queued): a response of many megabytes that a client's large window
        let out at once is handed out, and copied, a part at a time."""
        out = self._out
        # output is being taken: control replies no longer pile up
        self.budget.control_queued = 0
        if not out:
            return b""
        if limit is None or self._out_bytes <= limit:
            data = out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)
            out.clear()
            self._out_bytes = 0
            return data  # type: ignore[return-value]
        n = 0
        taken = 0  # whole chunks taken
        last = None  # the head of the chunk cut in two
        for chunk in out:
            room = limit - n
            if len(chunk) > room:
                view = memoryview(chunk)
                last = view[:room]
                out[taken] = view[room:]
                n = limit
                break
            taken += 1
            n += len(chunk)
            if n == limit:
                break
        parts = out[:taken]
        del out[:taken]
        if last is not None:
            parts.append(last)
        self._out_bytes -= n
        return b"".join(parts)

    @property
    def output_size(self) -> int:
        """Bytes queued and not yet handed out."""
        return self._out_bytes

    def discard_output(self) -> None:
        self._out.clear()
        self._out_bytes = 0
        self.budget.control_queued = 0

    # sending on streams; each returns whether the stream has now ended

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> bool:
        st = self.streams.get(stream_id)
        if st is None:
            return False
        flags = frames.FLAG_END_HEADERS | (frames.FLAG_END_STREAM if end_stream else 0)
        self.wrote_since_ping = True
        self.emit(frames.frame_header(frames.HEADERS, flags, stream_id, len(block)))
        self.emit(block)
        if end_stream:
            self._close(st)
            return True
        return False

    def send_data(self, stream_id: int, pieces: Iterable[Chunk]) -> bool:
        """Queue body bytes, sent as the send windows allow."""
        st = self.streams.get(stream_id)
        if st is None:
            return False
        pending = st.pending
        if pending is None:
            pending = st.pending = deque()
        pending.extend(memoryview(p) for p in pieces if p)
        return self._pump(st)

    def end_stream(self, stream_id: int, block: bytes | None) -> bool:
        """End the response with this header block (trailers, or the only
        headers), or with an empty END_STREAM DATA frame if None, after any
        body bytes still waiting for window."""
        st = self.streams.get(stream_id)
        if st is None or st.ending:
            return False
        st.trailers = block
        st.ending = True
        return self._pump(st)

    def send_response(self, stream_id: int, headers: bytes, body_head: bytes, body: bytes, trailers: bytes) -> bool:
        """Headers, a body of one DATA frame and trailers, in one piece, if
        the windows and the peer's frame size allow it and nothing is
        queued; otherwise nothing is sent and False returned. The body comes
        in two pieces so that a caller's framing of it need not be copied
        onto it."""
        st = self.streams.get(stream_id)
        if st is None or st.pending:
            return False
        n = len(body_head) + len(body)
        if n > self.send_window or n > st.send_window or n > self.peer.max_frame:
            return False
        self.send_window -= n
        st.send_window -= n
        self.wrote_since_ping = True
        try:
            head = self._headers_prefix[headers]
            tail = self._trailers_prefix[trailers]
        except KeyError:
            head = self._prefix(self._headers_prefix, frames.FLAG_END_HEADERS, headers)
            tail = self._prefix(self._trailers_prefix, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, trailers)
        sidb = stream_id.to_bytes(4, "big")
        self.emit(b"".join((head, sidb, headers, n.to_bytes(3, "big"), b"\x00\x00", sidb, body_head, body, tail, sidb, trailers)))
        if st.recv_ended:
            del self.streams[stream_id]  # never blocked: nothing was pending
            if st.header_bytes:
                self.held_headers.release(st.header_bytes)
        else:
            self._close(st)
        return True

    def reset_stream(self, stream_id: int, code: int) -> None:
        st = self.streams.pop(stream_id, None)
        if st is not None:
            self.blocked.pop(stream_id, None)
            if st.header_bytes:
                self.held_headers.release(st.header_bytes)
            self.emit(frames.rst_stream(stream_id, code))

    def refused_by_caller(self) -> None:
        """The layer above answered a request with a refusal (a reset, or
        headers alone) without running it: counted as a control reply, so a
        client that repeats such requests and does not read is cut off at
        its next bytes, as it is for the core's own replies."""
        self.budget.control_queued += 1

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self.streams

    def has_pending(self, stream_id: int) -> bool:
        st = self.streams.get(stream_id)
        return st is not None and bool(st.pending)

    def reset_handled(self) -> None:
        """The layer above has stopped the work of a stream reported reset;
        until it says so, the stream counts against the client (as Go's
        server counts handlers still running)."""
        budget = self.budget
        if budget.early_resets:
            budget.early_resets -= 1

    def goaway(self) -> None:
        """Graceful shutdown: refuse new streams; open ones go on."""
        if self.going_away or self.terminated:
            return
        self.going_away = True
        self.emit(frames.goaway(self.last_stream_id, frames.NO_ERROR))

    def terminate(self, code: int, message: str) -> ConnectionTerminated:
        """End the connection with GOAWAY; every open stream is gone."""
        if not self.terminated:
            self.terminated = True
            # what is still queued (a large response, acks a flooding client
            # never read) belongs to streams that end here: only the GOAWAY
            # goes, so closing copies no more than that
            self.discard_output()
            self.emit(frames.goaway(self.last_stream_id, code, message.encode()[:256]))
            self.streams.clear()
            self.blocked.clear()
            self.held_headers.release_all()
        return ConnectionTerminated(code, message)

    @staticmethod
    def _prefix(cache: dict[bytes, bytes], flags: int, block: bytes) -> bytes:
        """A HEADERS frame header up to the stream id, remembered per block
        (the blocks of a server's common responses are constants)."""
        prefix = frames.frame_header(frames.HEADERS, flags, 0, len(block))[:5]
        if len(cache) < _PREFIX_CACHE_LIMIT:
            cache[block] = prefix
        return prefix

    def _pump(self, st: H2Stream) -> bool:
        """Send what the windows allow; then the final headers, if all is out."""
        pending = st.pending
        sid = st.stream_id
        if pending:
            header = frames.frame_header
            max_frame = self.peer.max_frame
            while pending:
                chunk = pending[0]
                n = min(len(chunk), self.send_window, st.send_window, max_frame)
                if n <= 0:
                    self.blocked[sid] = st
                    return False
                # data goes out: a client's pings (Go's client pings per window
                # of data it reads, to size its windows) are forgiven
                self.wrote_since_ping = True
                if n == len(chunk):
                    pending.popleft()
                else:
                    pending[0] = chunk[n:]
                    chunk = chunk[:n]
                self.send_window -= n
                st.send_window -= n
                self.emit(header(frames.DATA, 0, sid, n))
                self.emit(chunk)
            self.blocked.pop(sid, None)
        if not st.ending:
            return False
        block = st.trailers
        if block is None:
            self.emit(frames.frame_header(frames.DATA, frames.FLAG_END_STREAM, sid, 0))
        else:
            self.emit(frames.frame_header(frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, sid, len(block)))
            self.emit(block)
        self._close(st)
        return True

    def _close(self, st: H2Stream) -> None:
        sid = st.stream_id
        if not st.recv_ended:
            self.emit(frames.rst_stream(sid, frames.NO_ERROR))
        if self.streams.pop(sid, None) is not None and st.header_bytes:
            self.held_headers.release(st.header_bytes)
        self.blocked.pop(sid, None)

    def _pump_from_input(self, st: H2Stream) -> None:
        if self._pump(st):
            self._events.append(StreamEnded(st.stream_id))
        elif not st.pending:
            self._events.append(StreamDrained(st.stream_id))

    def _pump_blocked(self) -> None:
        for st in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._pump_from_input(st)

    # input

    def receive(self, data: bytes) -> list[Event]:
        if self.terminated:
            return []
        events = self._events = []
        self._last_request = None
        try:
            if self.budget.control_queued > MAX_QUEUED_CONTROL:
                # refusals the layer above queued since (refused_by_caller)
                raise calm("too many control frames queued: the client does not read")
            self.reader.feed(data)
        except (ProtocolError, FramingError) as e:
            events.append(self.terminate(e.code, str(e)))
        return events

    def consumed(self, stream_id: int, n: int) -> None:
        """The layer above is done with n body bytes of this stream (handed
        to a handler, or dropped): credit them back to the client. A stream
        no longer open credits only the connection."""
        self.received.unacked += n
        self.credit_connection()
        st = self.streams.get(stream_id)
        if st is not None and not st.recv_ended:
            unacked = st.recv_unacked + n
            if unacked >= self._stream_credit_step:
                self.emit(frames.window_update(stream_id, unacked))
                st.recv_window += unacked
                unacked = 0
            st.recv_unacked = unacked

    def credit_connection(self) -> None:
        """Send the connection's credit if it is due. A layer above that
        consumed bytes of streams already ended may count them straight into
        `received.unacked` and call this once for all of them."""
        received = self.received
        if received.unacked >= received.credit_step:
            self.emit(frames.window_update(0, received.unacked))
            received.available += received.unacked
            received.unacked = 0

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError(frames.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        received = self.received
        received.available -= flow
        if received.available < 0:
            raise ProtocolError(frames.FLOW_CONTROL_ERROR, "DATA past the connection window")
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_stream_id:
                raise ProtocolError(frames.PROTOCOL_ERROR, "DATA on an idle stream")
            self.consumed(sid, flow)  # a stream already closed here; the client had not seen that yet
            return
        st.recv_window -= flow
        if st.recv_ended or st.recv_window < 0:
            code = frames.STREAM_CLOSED if st.recv_ended else frames.FLOW_CONTROL_ERROR
            self.budget.control_reply()
            self.reset_stream(sid, code)
            self.consumed(sid, flow)
            self._reset_event(sid, code)
            return
        if flags & _PADDED:
            payload = unpad(flags, payload)
            if flow > len(payload):
                self.consumed(sid, flow - len(payload))  # padding is nobody's to consume
        end_stream = flags & _END_STREAM != 0
        if end_stream:
            st.recv_ended = True
        elif not payload:
            self.budget.idle_frame()
        request = self._last_request
        if request is not None and request.stream_id == sid and request.data is None:
            # the body's first bytes read with the headers ride on the request event
            request.data = payload
            request.end_stream = end_stream
            return
        self._events.append(DataReceived(sid, payload, end_stream))

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise ProtocolError(frames.PROTOCOL_ERROR, "HEADERS on a server or zero stream id")
        if flags & _PADDED:
            payload = unpad(flags, payload)
        depends_on_itself = False
        if flags & _PRIORITY:
            if len(payload) < 5:
                raise ProtocolError(frames.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            depends_on_itself = frames.u32(payload) & 0x7FFFFFFF == sid
            payload = payload[5:]
        st = self.streams.get(sid)
        try:
            headers = self.decoder.decode(payload, st is None)
        except HPACKError as e:
            raise ProtocolError(frames.COMPRESSION_ERROR, f"HPACK: {e}") from None
        except HeaderListTooLarge:
            self._header_list_too_large(flags, sid)
            return
        except MalformedRequest:
            self._malformed(sid)
            return
        if depends_on_itself and st is None:  # RFC 9113 5.3.1: a stream error
            self._malformed(sid)
            return
        end_stream = flags & _END_STREAM != 0
        if st is not None:
            self._trailers(st, end_stream, headers)
            return
        if sid <= self.last_stream_id:
            raise ProtocolError(frames.PROTOCOL_ERROR, "HEADERS opening a stream id below the last")
        self.last_stream_id = sid
        size = self.decoder.unshared  # the header bytes this stream holds alone
        if self.going_away or len(self.streams) >= self.local.max_concurrent_streams or (size and not self.held_headers.hold(size)):
            self.budget.control_reply()
            self.emit(frames.rst_stream(sid, frames.REFUSED_STREAM))
            return
        self.budget.idle_frames = 0  # frames without content count between requests
        self.streams[sid] = H2Stream(sid, self.peer.initial_window, self.local.initial_window, end_stream, size)
        self._last_request = request = RequestReceived(sid, headers, end_stream, None, size)
        self._events.append(request)
