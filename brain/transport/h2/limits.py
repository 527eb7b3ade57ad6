"""What one client may make a connection hold or do before the connection
is cut off with GOAWAY(ENHANCE_YOUR_CALM), following the rules of Go's
net/http2 server (golang.org/x/net/http2, server.go and frame.go) where it
has one; each constant below names the rule it mirrors, or says it is
brain's own.

Each rule is a counter the core bumps on a frame that is rare for a normal
client (a ping, a reset, an empty frame), so a normal client's requests cost
nothing here; the counters are reset by what a normal client does instead.

Go's rules kept elsewhere: a SETTINGS frame of more than 100 entries or
with duplicates is a connection PROTOCOL_ERROR (settings.py); a header list
decoding past SETTINGS_MAX_HEADER_LIST_SIZE is answered 431 (control.py).
Go's fix for CONTINUATION floods ends the connection once a header block's
encoded bytes pass twice what the list may still decode to, or on any
CONTINUATION after the list is over its limit or holds an invalid field;
brain's reader bounds the encoded block by the list limit and the number of
CONTINUATION frames by the block's size instead (reader.py), and answers
past them with ENHANCE_YOUR_CALM, as for the other floods here.
"""
from __future__ import annotations

from dataclasses import dataclass

from brain.transport.h2 import frames
from brain.transport.h2.reader import FramingError

# Control replies (PING and SETTINGS acks, RST_STREAM) queued and not yet
# taken by the adapter, which stops taking output while the client does not
# read: a client flooding pings without reading their acks is cut off here.
# Go's maxQueuedControlFrames: past 10,000 SETTINGS, PING and RST_STREAM
# frames queued for writing its server closes the connection (brain sends
# the GOAWAY first). Go answers all SETTINGS read before it writes with one
# ack; brain acks each, as RFC 9113 6.5.3 asks, and counts each.
MAX_QUEUED_CONTROL = 10_000
# Streams the client reset before the server had finished them, less those
# the server did finish: a rapid-reset client opens and cancels streams
# whose handlers still start, and never lets one finish. Go's rule (its
# rapid-reset fix): handlers past SETTINGS_MAX_CONCURRENT_STREAMS wait to
# start, and more than four times that many waiting is ENHANCE_YOUR_CALM,
# "too_many_early_resets"; brain starts every handler at once, so it counts
# the reset ones not yet stopped instead, against four times Go's default
# stream limit (250).
MAX_EARLY_RESETS = 1000
# Frames that carry nothing (empty DATA or CONTINUATION frames, SETTINGS,
# PRIORITY, unknown types, malformed requests) since the client last opened
# a stream or sent body bytes: each costs the server a parse and sometimes a
# reply. brain's own rule: Go's server has no such count.
MAX_IDLE_FRAMES = 10_000


# Decoded header bytes that open streams may hold, on one connection and on
# all of a server's connections, past which new streams are refused with
# RST_STREAM(REFUSED_STREAM). Only header lists that are a stream's own count:
# the blocks a client repeats (every normal gRPC call) are decoded once and
# shared through the decoder's cache, bounded on its own. Go's servers bound
# only each list (SETTINGS_MAX_HEADER_LIST_SIZE, 1 MB by default in net/http2)
# and the streams (250 by default), so a connection may hold their product;
# brain's connection allows 1000 streams, so it bounds the sum: 8 requests
# with headers at the list limit, or 1000 with 8 KB each, more than any
# normal client's, whose are well under 1 KB and shared.
MAX_HELD_HEADERS = 8 * 1024 * 1024
MAX_SERVER_HELD_HEADERS = 256 * 1024 * 1024


@dataclass(slots=True)
class HeldHeaders:
    """Decoded header bytes held by open streams, against a limit: one per
    connection, and one shared by a server's connections."""

    limit: int
    held: int = 0


class HeaderAccount:
    """The header bytes of one connection's open streams, counted on the
    connection and on the server."""

    __slots__ = ("connection", "server")

    def __init__(self, server: HeldHeaders | None = None) -> None:
        self.connection = HeldHeaders(MAX_HELD_HEADERS)
        self.server = server if server is not None else HeldHeaders(MAX_SERVER_HELD_HEADERS)

    def hold(self, size: int) -> bool:
        """Count a new stream's header list; False if it does not fit."""
        conn, server = self.connection, self.server
        if conn.held + size > conn.limit or server.held + size > server.limit:
            return False
        conn.held += size
        server.held += size
        return True

    def release(self, size: int) -> None:
        self.connection.held -= size
        self.server.held -= size

    def release_all(self) -> None:
        """The connection has ended: nothing of it is held."""
        self.server.held -= self.connection.held
        self.connection.held = 0


def calm(message: str) -> FramingError:
    return FramingError(frames.ENHANCE_YOUR_CALM, message)


class Budget:
    """The counters of one connection."""

    __slots__ = ("control_queued", "early_resets", "idle_frames")

    def __init__(self) -> None:
        self.control_queued = 0
        self.early_resets = 0
        self.idle_frames = 0

    def control_reply(self) -> None:
        """A control frame was queued in reply to the client."""
        self.control_queued += 1
        if self.control_queued > MAX_QUEUED_CONTROL:
            raise calm("too many control frames queued: the client does not read")

    def early_reset(self) -> None:
        """The client reset a stream the server had not finished."""
        self.early_resets += 1
        if self.early_resets > MAX_EARLY_RESETS:
            raise calm("too many streams reset before they finished")

    def idle_frame(self) -> None:
        self.idle_frames += 1
        if self.idle_frames > MAX_IDLE_FRAMES:
            raise calm("too many frames without content")
