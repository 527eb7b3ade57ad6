"""SETTINGS (RFC 7540 6.5): the settings a server announces, and those a
peer announces, validated as the RFC requires."""
from __future__ import annotations

from dataclasses import dataclass

from brain.transport.h2 import frames


MAX_SETTINGS = 100  # entries in one SETTINGS frame (Go's net/http2 server's bound)


class SettingsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """What this server lets a client send ahead, per stream and in all,
    and how many streams it may have open at once (more are refused with
    RST_STREAM(REFUSED_STREAM), which gRPC clients retry; Go's net/http2
    server, 250 streams by default, resets them PROTOCOL_ERROR unless its
    own SETTINGS may not have arrived yet, and etcd's grpc-go sets no limit)."""

    initial_window: int
    connection_window: int
    max_header_list: int
    max_concurrent_streams: int = 1000

    def preface(self) -> bytes:
        """The server's connection preface: SETTINGS, then the connection
        window raised from its fixed initial size."""
        out = frames.settings([
            (frames.SETTINGS_INITIAL_WINDOW_SIZE, self.initial_window),
            (frames.SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list),
            (frames.SETTINGS_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
        ])
        if self.connection_window > frames.DEFAULT_WINDOW:
            out += frames.window_update(0, self.connection_window - frames.DEFAULT_WINDOW)
        return out


@dataclass(slots=True)
class PeerSettings:
    """The client's settings that bind what the server sends."""

    initial_window: int = frames.DEFAULT_WINDOW
    max_frame: int = frames.DEFAULT_MAX_FRAME

    def apply(self, payload: bytes) -> int:
        """Take a SETTINGS payload; return how much every stream's send
        window changes (the initial window's delta, RFC 7540 6.9.2)."""
        if len(payload) % 6:
            raise SettingsError(frames.FRAME_SIZE_ERROR, "SETTINGS of bad length")
        pairs = frames.parse_settings(payload)
        # Go's net/http2 server hangs up on these (not in the RFC): a client
        # has a handful of settings to send, and each frame has work in reply
        if len(pairs) > MAX_SETTINGS or len({key for key, _ in pairs}) != len(pairs):
            raise SettingsError(frames.PROTOCOL_ERROR, "SETTINGS with more than 100 entries or duplicates")
        delta = 0
        for key, value in pairs:
            if key == frames.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise SettingsError(frames.FLOW_CONTROL_ERROR, "initial window too large")
                delta += value - self.initial_window
                self.initial_window = value
            elif key == frames.SETTINGS_MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= 16777215:
                    raise SettingsError(frames.PROTOCOL_ERROR, "bad max frame size")
                self.max_frame = value
            elif key == frames.SETTINGS_ENABLE_PUSH and value > 1:
                raise SettingsError(frames.PROTOCOL_ERROR, "bad enable push")
            # header table size: the server's encodings use no dynamic table, so any size fits
        return delta
