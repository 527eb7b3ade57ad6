"""Flow control (RFC 7540 5.2 and 6.9).

Receiving: a client sending past a window it was given is a flow-control
error. Windows are credited back as the layer above consumes the data (a
handler takes a request message), in large steps, so what a client makes a
connection buffer is bounded by the windows, and a streaming request is read
only as fast as its handler consumes it.

Sending: a window is a count the peer raises with WINDOW_UPDATE and sending
lowers; it may go negative when the peer shrinks its initial window."""
from __future__ import annotations

from dataclasses import dataclass, field

from brain.transport.h2 import frames


class WindowError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class ReceiveWindow:
    """The connection's receive window: what the client may still send,
    and bytes consumed and not yet credited back; credit is due once they
    reach a quarter of the window. The core counts both inline, as it does
    for every DATA frame."""

    size: int
    unacked: int = 0
    available: int = field(init=False)
    credit_step: int = field(init=False)

    def __post_init__(self) -> None:
        self.available = max(self.size, frames.DEFAULT_WINDOW)  # a connection window never starts lower
        self.credit_step = self.size >> 2


def increment_of(payload: bytes) -> int:
    """A WINDOW_UPDATE's increment (the reserved bit dropped)."""
    if len(payload) != 4:
        raise WindowError(frames.FRAME_SIZE_ERROR, "WINDOW_UPDATE of bad length")
    return frames.u32(payload) & 0x7FFFFFFF


def grown(window: int, increment: int) -> int:
    """A send window after a WINDOW_UPDATE: a zero increment is a protocol
    error, a window over 2^31-1 a flow-control error."""
    if increment == 0:
        raise WindowError(frames.PROTOCOL_ERROR, "zero WINDOW_UPDATE")
    window += increment
    if window > frames.MAX_WINDOW:
        raise WindowError(frames.FLOW_CONTROL_ERROR, "window overflow")
    return window
