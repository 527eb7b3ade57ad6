"""The core's handlers of connection-level frames (PRIORITY, SETTINGS,
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE) and of RST_STREAM, which no
request's path runs through; H2Connection inherits them."""
from __future__ import annotations

from typing import Callable

from brain.transport.h2 import frames
from brain.transport.h2.events import DataReceived, Event, StreamReset
from brain.transport.h2.hpack import Header, literal_indexed_name
from brain.transport.h2.keepalive import PingPolicy
from brain.transport.h2.limits import Budget, HeaderAccount, calm
from brain.transport.h2.settings import PeerSettings, SettingsError
from brain.transport.h2.streams import Chunk, H2Stream
from brain.transport.h2.windows import WindowError, grown, increment_of

# :status 431 (Request Header Fields Too Large), Go's server's answer to a
# request whose header list is over the advertised limit
_TOO_LARGE = literal_indexed_name(8, b"431")


class ProtocolError(Exception):
    """A connection error (RFC 7540 5.4.1): the connection ends with GOAWAY."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlFrames:
    # the connection state these handlers work on, kept by H2Connection
    peer: PeerSettings
    streams: dict[int, H2Stream]
    blocked: dict[int, H2Stream]
    send_window: int
    last_stream_id: int
    budget: Budget
    held_headers: HeaderAccount
    _events: list[Event]
    # keepalive enforcement (None: pings at any rate), its clock, and whether
    # headers or data went out since the client's last ping
    ping_policy: PingPolicy | None
    clock: Callable[[], float]
    wrote_since_ping: bool

    def emit(self, data: Chunk) -> None:
        raise NotImplementedError

    def reset_stream(self, stream_id: int, code: int) -> None:
        raise NotImplementedError

    def _pump_blocked(self) -> None:
        raise NotImplementedError

    def _pump_from_input(self, st: H2Stream) -> None:
        raise NotImplementedError

    def _header_list_too_large(self, flags: int, sid: int) -> None:
        """A request's headers decode to more than the advertised limit: the
        request is answered 431 and not reported; trailers that do end the
        stream with RST_STREAM(FRAME_SIZE_ERROR), as grpc-go's server does."""
        self.budget.control_reply()
        if sid in self.streams:
            self.reset_stream(sid, frames.FRAME_SIZE_ERROR)
            self._reset_event(sid, frames.FRAME_SIZE_ERROR)
            return
        self._new_stream_id(sid)
        end_stream = frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM
        self.emit(frames.frame_header(frames.HEADERS, end_stream, sid, len(_TOO_LARGE)) + _TOO_LARGE)
        if not flags & frames.FLAG_END_STREAM:
            self.emit(frames.rst_stream(sid, frames.NO_ERROR))

    def _trailers(self, st: H2Stream, end_stream: bool, headers: list[Header]) -> None:
        """A client's second header block on a stream: trailers, which must
        end the stream and hold no pseudo-header, else a stream error
        PROTOCOL_ERROR; after the stream's end, a stream error STREAM_CLOSED
        (RFC 9113 8.1, 5.1), as Go's servers make them. A gRPC server has no
        use for their content: they end the request."""
        sid = st.stream_id
        if st.recv_ended:
            code = frames.STREAM_CLOSED
        elif not end_stream or any(name[:1] == b":" for name, _ in headers):
            code = frames.PROTOCOL_ERROR
        else:
            st.recv_ended = True
            self._events.append(DataReceived(sid, b"", True))
            return
        self.budget.control_reply()
        self.reset_stream(sid, code)
        self._reset_event(sid, code)

    def _malformed(self, sid: int) -> None:
        """A request's header list is malformed (RFC 9113 8.1.1): a stream
        error, answered RST_STREAM(PROTOCOL_ERROR) and not reported. It
        counts as a frame without content: a client sending nothing else is
        cut off as one sending empty frames."""
        self._new_stream_id(sid)
        self.budget.idle_frame()
        self.budget.control_reply()
        self.emit(frames.rst_stream(sid, frames.PROTOCOL_ERROR))

    def _new_stream_id(self, sid: int) -> None:
        """A client's new stream must have a higher id than all before it
        (RFC 9113 5.1.1): if not, a connection error, as Go's servers make it."""
        if sid <= self.last_stream_id:
            raise ProtocolError(frames.PROTOCOL_ERROR, "HEADERS opening a stream id below the last")
        self.last_stream_id = sid

    def _reset_event(self, sid: int, code: int) -> None:
        """Report a stream reset before it finished; it counts against the
        client until the layer above calls reset_handled."""
        self.budget.early_reset()
        self._events.append(StreamReset(sid, code))

    def _on_rst_stream(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or len(payload) != 4:
            raise ProtocolError(frames.PROTOCOL_ERROR, "bad RST_STREAM")
        st = self.streams.pop(sid, None)
        if st is not None:
            self.blocked.pop(sid, None)
            if st.header_bytes:
                self.held_headers.release(st.header_bytes)
            self._reset_event(sid, frames.u32(payload))

    def _on_priority(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError(frames.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise ProtocolError(frames.FRAME_SIZE_ERROR, "PRIORITY of bad length")
        self.budget.idle_frame()
        if frames.u32(payload) & 0x7FFFFFFF == sid:  # depends on itself: a stream error (RFC 9113 5.3.1)
            self.budget.control_reply()
            if sid in self.streams:
                self.reset_stream(sid, frames.PROTOCOL_ERROR)
                self._reset_event(sid, frames.PROTOCOL_ERROR)
            else:
                self.emit(frames.rst_stream(sid, frames.PROTOCOL_ERROR))

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ProtocolError(frames.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & frames.FLAG_ACK:
            if payload:
                raise ProtocolError(frames.FRAME_SIZE_ERROR, "SETTINGS ack with payload")
            return
        self.budget.idle_frame()
        try:
            delta = self.peer.apply(payload)
        except SettingsError as e:
            raise ProtocolError(e.code, str(e)) from None
        if delta:
            for st in self.streams.values():
                st.send_window += delta
        self.budget.control_reply()
        self.emit(frames.SETTINGS_ACK)
        if delta > 0:
            self._pump_blocked()

    def _on_push_promise(self, flags: int, sid: int, payload: bytes) -> None:
        raise ProtocolError(frames.PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0 or len(payload) != 8:
            raise ProtocolError(frames.PROTOCOL_ERROR, "bad PING")
        if not flags & frames.FLAG_ACK:
            policy = self.ping_policy
            if policy is not None:
                forgiven, self.wrote_since_ping = self.wrote_since_ping, False
                if policy.too_many(self.clock(), forgiven):
                    raise calm("too_many_pings")
            self.budget.control_reply()
            self.emit(frames.frame(frames.PING, frames.FLAG_ACK, 0, payload))

    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ProtocolError(frames.PROTOCOL_ERROR, "GOAWAY on a stream")
        # the client closes the connection itself once its calls are done

    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> None:
        try:
            increment = increment_of(payload)
            if sid == 0:
                self.send_window = grown(self.send_window, increment)
                self._pump_blocked()
                return
        except WindowError as e:
            raise ProtocolError(e.code, f"connection {e}") from None
        st = self.streams.get(sid)
        if st is None:
            return
        try:
            st.send_window = grown(st.send_window, increment)
        except WindowError as e:  # a stream error: that stream ends, the connection goes on
            self.reset_stream(sid, e.code)
            self._reset_event(sid, e.code)
            return
        if sid in self.blocked:
            self._pump_from_input(st)
