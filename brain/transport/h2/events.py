"""What the HTTP/2 core reports to the layer above after receiving bytes.

Pings, settings and their acknowledgements are answered inside the core and
not reported: nothing above it has a use for them."""
from __future__ import annotations

from dataclasses import dataclass

from brain.transport.h2.hpack import Header


@dataclass(slots=True)
class RequestReceived:
    """A client opened a stream with this header block. When the first
    DATA frame came in the same read, its bytes are here (and end_stream is
    that frame's): a short request is then one event, not two.
    header_bytes: the size of the header list if it is this request's own,
    0 if the decoder's cache shares it (it may then be remembered by its
    identity)."""

    stream_id: int
    headers: list[Header]
    end_stream: bool
    data: bytes | None = None
    header_bytes: int = 0


@dataclass(slots=True)
class DataReceived:
    """Request body bytes (padding removed); end_stream ends the request.
    Trailers from the client arrive as an empty DataReceived with
    end_stream set, since a server has no use for their content."""

    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(slots=True)
class StreamReset:
    """The stream ended without completing: the client reset it, or the core
    did because of a stream error. Nothing more may be sent on it. The layer
    above calls the core's reset_handled once it has stopped the stream's
    work: a client resetting streams faster than that is cut off."""

    stream_id: int
    error_code: int


@dataclass(slots=True)
class StreamEnded:
    """The response ended (END_STREAM sent) once flow control let the last
    of it out, while receiving; an end reached while sending is reported by
    the sending call's return value instead."""

    stream_id: int


@dataclass(slots=True)
class StreamDrained:
    """Everything queued on this open stream has been sent: a writer waiting
    for send window may go on."""

    stream_id: int


@dataclass(slots=True)
class ConnectionTerminated:
    """A connection error: GOAWAY has been queued and the core accepts
    nothing more; every open stream is gone."""

    error_code: int
    message: str


Event = RequestReceived | DataReceived | StreamReset | StreamEnded | StreamDrained | ConnectionTerminated
