"""Request bodies split into gRPC messages (a 5-byte prefix: compressed
flag, big-endian length), and their bytes credited back to the client.

Request bytes are credited back as handlers take them, except bytes of
unfinished messages, which no handler can take yet: a message larger than
the stream window, or arriving while unfinished ones already hold half the
connection window, is credited as it comes, or the client could never finish
it; those credited bytes are bounded in turn, past which the call ends
RESOURCE_EXHAUSTED. So one connection holds at most its window and that
bound of request bytes, however many streams it opens."""
from __future__ import annotations

import functools

import grpc

from brain.transport.context import RequestStream
from brain.transport.h2.core import H2Connection
from brain.transport.stream import Stream


class MessageReader:
    """The message splitting of one connection's calls."""

    def __init__(self, core: H2Connection, max_receive: int) -> None:
        self.core = core
        self.max_receive = max_receive
        self.stream_window = core.local.initial_window
        self.partial = 0  # bytes of unfinished messages not credited
        self.partial_limit = core.local.connection_window >> 1
        self.credited = 0  # bytes of unfinished messages credited
        self.credited_limit = max(core.local.connection_window, max_receive + 5)

    def feed(self, st: Stream, payload: bytes) -> None:
        """Split the stream's bytes into gRPC messages (a 5-byte prefix:
        compressed flag, big-endian length)."""
        if st.ending:  # the call's status is queued: nothing takes more of its request
            self.core.consumed(st.sid, len(payload))
            return
        limit = self.max_receive
        buf = st.recv
        if not buf and len(payload) >= 5 and payload[0] == 0:
            n = int.from_bytes(payload[1:5], "big")
            if n + 5 == len(payload) and n <= limit:
                self.deliver(st, payload, 1, n + 5)
                return
        if buf is None:
            buf = st.recv = bytearray()
        buf += payload
        k = len(payload)
        if len(buf) >= 5 and (int.from_bytes(buf[1:5], "big") + 5 > self.stream_window or self.partial + k > self.partial_limit):
            self.core.consumed(st.sid, k)
            st.recv_credited += k
            self.credited += k
            if self.credited > self.credited_limit:
                self.drop_partial(st)
                st.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many unfinished request messages on the connection")
                return
        else:
            self.partial += k
        # the whole messages now in buf are checked, then handed on as one run
        pos = count = 0
        size = len(buf)
        while size - pos >= 5:
            n = int.from_bytes(buf[pos + 1:pos + 5], "big")
            if n > limit:
                self.core.consumed(st.sid, self.drop_partial(st))
                st.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max ({n} vs. {limit})")
                return
            if buf[pos] != 0:
                self.core.consumed(st.sid, self.drop_partial(st))
                st.abort(grpc.StatusCode.INTERNAL, "Compressed message but no grpc-encoding was negotiated")
                return
            if size - pos < n + 5:
                break
            pos += n + 5
            count += 1
        if not count:
            return
        run = bytes(buf[:pos])
        del buf[:pos]
        credited = min(st.recv_credited, pos)
        st.recv_credited -= credited
        self.credited -= credited
        self.partial -= pos - credited
        self.deliver(st, run, count, pos - credited)

    def drop_partial(self, st: Stream) -> int:
        """Forget the stream's unfinished message; the bytes of it still to
        credit."""
        buf = st.recv
        assert buf is not None
        owed = len(buf) - st.recv_credited
        self.partial -= owed
        self.credited -= st.recv_credited
        st.recv_credited = 0
        buf.clear()
        return owed

    def deliver(self, st: Stream, framed: bytes, count: int, credit: int) -> None:
        """Hand on `count` whole messages, with their prefixes; their `credit`
        bytes are credited once a handler has them."""
        if st.requests is not None:
            st.requests.push(framed, credit)
            return
        if st.handler is None:
            # the method is still being looked up: its messages wait, not
            # credited, until it is known whether a handler streams them
            st.requests = RequestStream(None, functools.partial(self.core.consumed, st.sid))
            st.requests.push(framed, credit)
            return
        if credit:
            self.core.consumed(st.sid, credit)
        if st.message is None and count == 1:
            st.message = framed[5:]
        else:
            st.abort(grpc.StatusCode.UNIMPLEMENTED, "received more than one request message for a unary call")
