"""Splitting a client's byte stream into frames (RFC 7540 3.5, 4.1, 6.10):
the connection preface, frame boundaries across reads, the frame size
limit, and header blocks continued over CONTINUATION frames, which reach
the HEADERS handler as one block."""
from __future__ import annotations

from typing import Callable

from brain.transport.h2 import frames

FrameHandler = Callable[[int, int, bytes], None]  # flags, stream id, payload
# tested on every frame, as plain names
_HEADERS = frames.HEADERS
_END_HEADERS = frames.FLAG_END_HEADERS
_MAX_FRAME = frames.DEFAULT_MAX_FRAME


class FramingError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def unpad(flags: int, payload: bytes) -> bytes:
    """A DATA or HEADERS payload without its padding."""
    if not flags & frames.FLAG_PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise FramingError(frames.PROTOCOL_ERROR, "bad padding")
    return payload[1:len(payload) - payload[0]]


class FrameReader:
    def __init__(
        self, handlers: dict[int, FrameHandler], max_header_block: int, on_unknown: Callable[[], None] | None = None,
    ) -> None:
        # by frame type, in a tuple: indexing it is cheaper than a dict lookup
        self.handlers: tuple[FrameHandler | None, ...] = tuple(handlers.get(t) for t in range(max(handlers) + 1))
        self.on_unknown = on_unknown  # told of each frame of a type without a handler, which is ignored
        self.max_header_block = max_header_block
        # A client splits a block into frames as large as it may send; many
        # small ones (empty ones cost nothing to send, and never reach the
        # block's size limit) only cost the server their parsing.
        self.max_continuations = 16 + max_header_block // 4096
        self._continued = 0
        self._buf = b""
        self._preface_seen = False
        self._settings_seen = False
        self._continuation: tuple[int, int, bytearray] | None = None

    def feed(self, data: bytes) -> None:
        """Hand every complete frame to its handler; keep the rest."""
        buf = self._buf + data if self._buf else data
        pos = 0
        if not self._preface_seen:
            if len(buf) < len(frames.PREFACE):
                if not frames.PREFACE.startswith(buf):
                    raise FramingError(frames.PROTOCOL_ERROR, "bad connection preface")
                self._buf = buf
                return
            if not buf.startswith(frames.PREFACE):
                raise FramingError(frames.PROTOCOL_ERROR, "bad connection preface")
            self._preface_seen = True
            pos = len(frames.PREFACE)
        end = len(buf)
        if not self._settings_seen:
            if end - pos < 9:
                self._buf = buf[pos:]
                return
            # the preface ends with the client's SETTINGS (RFC 9113 3.4)
            if buf[pos + 3] != frames.SETTINGS or buf[pos + 4] & frames.FLAG_ACK:
                raise FramingError(frames.PROTOCOL_ERROR, "the client's first frame is not SETTINGS")
            self._settings_seen = True
        unpack = frames.HEADER.unpack_from
        handlers = self.handlers
        while end - pos >= 9:
            lt, flags, sid = unpack(buf, pos)
            length = lt >> 8
            if length > _MAX_FRAME:
                raise FramingError(frames.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
            stop = pos + 9 + length
            if stop > end:
                break
            payload = buf[pos + 9:stop]
            pos = stop
            ftype = lt & 0xFF
            sid &= 0x7FFFFFFF
            if self._continuation is not None:
                self._continue(ftype, flags, sid, payload)
                continue
            if ftype == _HEADERS and not flags & _END_HEADERS:
                # padding belongs to this frame, not to the block; the priority
                # fields stay at the block's head, for the HEADERS handler
                payload = unpad(flags, payload)
                flags &= ~frames.FLAG_PADDED
                self._continuation = (sid, flags, bytearray(payload))
                self._continued = 0
                continue
            handler = handlers[ftype] if ftype < len(handlers) else None
            if handler is not None:
                handler(flags, sid, payload)
            elif self.on_unknown is not None:
                self.on_unknown()
        self._buf = buf[pos:] if pos < end else b""

    def _continue(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        cont = self._continuation
        assert cont is not None
        if ftype != frames.CONTINUATION:
            raise FramingError(frames.PROTOCOL_ERROR, "expected CONTINUATION")
        if cont[0] != sid:
            raise FramingError(frames.PROTOCOL_ERROR, "unexpected CONTINUATION")
        cont[2].extend(payload)
        self._continued += 1
        if self._continued > self.max_continuations:
            raise FramingError(frames.ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        if len(cont[2]) > self.max_header_block:
            raise FramingError(frames.ENHANCE_YOUR_CALM, "header block too large")
        if flags & frames.FLAG_END_HEADERS:
            self._continuation = None
            on_headers = self.handlers[frames.HEADERS]
            assert on_headers is not None
            on_headers(cont[1] | frames.FLAG_END_HEADERS, sid, bytes(cont[2]))
