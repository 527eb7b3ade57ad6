"""The asyncio side of a client connection: socket bytes into the HTTP/2
core, the core's events to the gRPC layer, the core's output to the socket.

A connection speaks HTTP/2 or, for probes and scrapes of /health, /version
and /metrics as etcd serves them, HTTP/1.1: TLS's ALPN says which, and
without it the first bytes do (the HTTP/2 preface, or a request line). TLS
is run here over the plain socket (brain/transport/tls.py), so that a
client refused at the handshake gets its alert.

Everything the bytes of one data_received call produce (acks, window
updates, responses of handlers that finish at once) leaves in one
transport.write; output of handlers that finish later is collected until
the event loop's next turn, so responses completing together share a write.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol

from brain.transport import http1
from brain.transport.dispatch import GrpcSession, HandlerSource, HttpHandler
from brain.transport.h2 import frames
from brain.transport.h2.core import H2Connection
from brain.transport.h2.keepalive import Keepalive, PingPolicy
from brain.transport.h2.limits import HeldHeaders
from brain.transport.h2.settings import LocalSettings
from brain.transport.tls import ServerTLS, TLSError

log = logging.getLogger("brain.transport")

# What clients may send ahead: credited back as handlers take the requests,
# so these bound what one connection buffers.
LOCAL_SETTINGS = LocalSettings(
    initial_window=4 * 1024 * 1024,
    connection_window=16 * 1024 * 1024,
    max_header_list=1024 * 1024,
    # etcd sets no limit; this one is well above the requests a kube-apiserver
    # runs at once on one connection, and bounds the calls one client holds
    max_concurrent_streams=1000,
)
# Output collected for the event loop's next turn is written at once when it
# passes this size: a burst (one put fanned out to many watchers, encoded by
# many stream tasks in one turn) starts reaching the client while the rest is
# still being encoded.
FLUSH_BYTES = 64 * 1024
# Output is copied into the transport at most this much per write, until it
# pushes back
WRITE_CHUNK = 256 * 1024
# A connection cut off while its client does not read is dropped this long
# after its GOAWAY was written, as Go's server does: closing waits for the
# buffered output to leave, which it never may.
GOAWAY_GRACE = 5.0
# A TLS client that has not finished its handshake by then is dropped (the
# default of asyncio's TLS transports)
TLS_HANDSHAKE_TIMEOUT = 60.0


KEEPALIVE_PING = b"brainka\x00"  # the payload of the server's keepalive pings


class Acceptor(HandlerSource, Protocol):
    """What a connection needs of the server that accepted it."""

    keepalive: Keepalive | None
    held_headers: HeldHeaders  # header bytes held by the open streams of all connections

    def connection_made(self, conn: ClientConnection) -> None: ...

    def connection_gone(self, conn: ClientConnection) -> None: ...


@dataclass(slots=True)
class Http1Exchange:
    """The one request of an HTTP/1.1 connection, while its head arrives."""

    timer: asyncio.TimerHandle
    received: bytes = b""
    answered: bool = False
    task: asyncio.Task[None] | None = field(default=None)


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: Acceptor, tls_context: ssl.SSLContext | None = None) -> None:
        """tls_context: the connection runs TLS (itself, over the plain socket)."""
        self.server = server
        self.tls = ServerTLS(tls_context) if tls_context is not None else None
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.paused = False
        self.closed = False
        self.core = H2Connection(LOCAL_SETTINGS, self._output_queued, FLUSH_BYTES, server.held_headers)
        self.session: GrpcSession | None = None  # once the connection is known to be HTTP/2
        self.http1: Http1Exchange | None = None  # once it is known to be HTTP/1.1
        self._first_bytes = b""  # while it is neither
        self._receiving = False
        self._flush_scheduled = False
        self._eof_sent = False
        # keepalive: whether the client sent anything since the last check
        self._read_since = True
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None

    # Link

    def writes_paused(self) -> bool:
        return self.paused

    def peer_identities(self) -> list[bytes] | None:
        """The client certificate's common names, as grpcio reports them."""
        cert = self.tls.ssl.getpeercert() if self.tls is not None else None
        if not cert:
            return None
        subject: Any = cert.get("subject", ())  # tuples of (name, value) pairs, one per RDN
        names = [v.encode() for rdn in subject for k, v in rdn if k == "commonName"]
        return names or None

    def close(self) -> None:
        if self.transport is not None:
            self._write_out(everything=True)  # output held back while the client was not reading
            self._close_tls()
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        addr = transport.get_extra_info("peername")
        if isinstance(addr, tuple) and len(addr) >= 2:
            host, port = addr[0], addr[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self.server.connection_made(self)
        if self.tls is not None:
            self._handshake_timer = self.loop.call_later(TLS_HANDSHAKE_TIMEOUT, self._handshake_expired)
        # else the client's first bytes tell which protocol it speaks

    def _tls_received(self, data: bytes) -> bytes:
        """The plaintext of the client's bytes. When the handshake completes,
        ALPN says which protocol the client speaks; when it fails, the client
        gets the alert and the connection closes."""
        tls = self.tls
        assert tls is not None and self.transport is not None
        established = tls.established
        try:
            data, out = tls.receive(data)
        except TLSError as e:
            log.info("TLS from %s refused: %s", self.peer, e)
            self.transport.write(e.alert)
            self.closed = True
            self.transport.close()
            return b""
        if out:
            self.transport.write(out)
        if tls.established and not established:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            alpn = tls.ssl.selected_alpn_protocol()
            if alpn == "h2":
                self._start_h2()
            elif alpn == "http/1.1":
                self._start_http1(b"")
        return data

    def _handshake_expired(self) -> None:
        if self.tls is not None and not self.tls.established and self.transport is not None:
            self.closed = True
            self.transport.abort()

    def _start_h2(self) -> None:
        self.session = GrpcSession(self.core, self, self.server)
        keepalive = self.server.keepalive
        if keepalive is not None:
            self.core.ping_policy = PingPolicy(keepalive.min_time)
            self._keepalive_timer = self.loop.call_later(keepalive.interval, self._keepalive_check)
        self.core.initiate()
        self.flush()

    def _keepalive_check(self) -> None:
        keepalive = self.server.keepalive
        if self.closed or keepalive is None:
            return
        if self._read_since:
            self._read_since = False
            self._keepalive_timer = self.loop.call_later(keepalive.interval, self._keepalive_check)
            return
        # a whole interval without a byte from the client: ask it
        self.core.emit(frames.frame(frames.PING, 0, 0, KEEPALIVE_PING))
        self.flush()
        self._keepalive_timer = self.loop.call_later(keepalive.timeout, self._keepalive_expired)

    def _keepalive_expired(self) -> None:
        if self.closed:
            return
        if self._read_since:
            self._keepalive_check()
            return
        log.info("HTTP/2 connection from %s: no answer to a keepalive ping; closing it", self.peer)
        self.core.discard_output()  # for a peer that is gone
        self._close_now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self.http1 is not None:
            self.http1.timer.cancel()
            if self.http1.task is not None:
                self.http1.task.cancel()
        self.core.discard_output()
        self.core.held_headers.release_all()
        if self.session is not None:
            self.session.connection_lost()
        self.server.connection_gone(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.flush()
        if self.session is not None:
            self.session.writable()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._read_since = True
        if self.tls is not None:
            data = self._tls_received(data)
            if not data:
                return
        if self.session is None:
            data = self._before_h2(data)
            if not data:
                return
        self._receiving = True
        try:
            events = self.core.receive(data)
            if events:
                assert self.session is not None
                self.session.handle(events)
            if self.core.terminated:
                log.info("HTTP/2 connection error from %s: %s", self.peer, getattr(events[-1], "message", ""))
                self._close_now()
        except Exception:
            log.exception("HTTP/2 connection from %s failed", self.peer)
            self.fail(frames.INTERNAL_ERROR, "internal error")
        finally:
            self._receiving = False
            self.flush()

    def _before_h2(self, data: bytes) -> bytes:
        """Bytes of a connection not yet known to be HTTP/2: HTTP/1.1 is
        served here; what is HTTP/2 (or neither: the core refuses it) is
        returned once the session is started."""
        if self.http1 is not None:
            self._http1_received(data)
            return b""
        start = self._first_bytes + data
        preface = frames.PREFACE
        if preface.startswith(start[:len(preface)]):
            if len(start) < len(preface):
                self._first_bytes = start
                return b""
        else:
            kind = http1.looks_like_http1(start)
            if kind is None:
                self._first_bytes = start
                return b""
            if kind:
                self._first_bytes = b""
                self._start_http1(start)
                return b""
        self._first_bytes = b""
        self._start_h2()
        return start

    # HTTP/1.1

    def _start_http1(self, start: bytes) -> None:
        self.http1 = Http1Exchange(self.loop.call_later(http1.READ_TIMEOUT, self.close))
        if start:
            self._http1_received(start)

    def _http1_received(self, data: bytes) -> None:
        exchange = self.http1
        assert exchange is not None
        if exchange.answered:
            return  # one request per connection: anything after it is not read
        exchange.received += data
        try:
            head = http1.parse_head(exchange.received)
        except http1.BadRequest as e:
            self._http1_reply(http1.error_response(e.status))
            return
        if head is None:
            return
        exchange.answered = True
        handler = self.server.http_handler
        if head.method != "GET":
            self._http1_reply(http1.error_response(405))
        elif handler is None:
            self._http1_reply(http1.error_response(404))
        else:
            exchange.task = self.loop.create_task(self._http1_serve(head.path, handler))

    async def _http1_serve(self, path: str, handler: HttpHandler) -> None:
        try:
            status, content_type, body = await handler(path)
        except Exception:
            log.exception("serving GET %s", path)
            self._http1_reply(http1.error_response(500))
            return
        self._http1_reply(http1.response(status, content_type, body))

    def _http1_reply(self, data: bytes) -> None:
        exchange = self.http1
        assert exchange is not None
        exchange.answered = True
        exchange.timer.cancel()
        self._send(data)
        if self.transport is not None:
            self._close_tls()
            self.transport.close()

    # output

    def _output_queued(self, queued: int) -> None:
        if self._receiving or self.paused:
            return
        if queued >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the core's output to the socket, unless the client is not
        reading: then it stays in the core, which counts the control replies
        piling up there and cuts off a client that floods them."""
        self._flush_scheduled = False
        if not self.paused:
            self._write_out()

    def _write_out(self, everything: bool = False) -> None:
        """Write queued output a part at a time until the transport pushes
        back (pause_writing): a client whose windows let a large response
        out at once does not hold the event loop for the copy of all of it.
        The rest goes at resume_writing. everything: write it all now (the
        connection is closing)."""
        if self._eof_sent:
            return
        core = self.core
        while everything or not self.paused:
            data = core.data_to_send(None if everything else WRITE_CHUNK)
            if not data:
                return
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(self.tls.send(data) if self.tls is not None else data)

    def _close_tls(self) -> None:
        """End the TLS session (close_notify) before the socket closes."""
        if self.tls is not None and self.tls.established and self.transport is not None:
            self.transport.write(self.tls.close_notify())

    # ending

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY and close."""
        if self.closed:
            return
        if self.session is None:  # not an HTTP/2 connection (yet): nothing to tell it
            self.closed = True
            self.close()
            return
        log.info("HTTP/2 connection error from %s: %s", self.peer, message)
        self.core.terminate(code, message)
        if self.session is not None:
            self.session.connection_lost()
        self._close_now()

    def _close_now(self) -> None:
        self.closed = True
        self._write_out(everything=True)
        transport = self.transport
        if transport is None:
            return
        self._close_tls()
        if transport.can_write_eof():
            # half-close, reading on and ignoring what arrives: closing a socket
            # with unread input resets it, and the reset would destroy the
            # GOAWAY before a client still sending could read it
            transport.write_eof()
            self._eof_sent = True
        else:
            transport.close()
        self.loop.call_later(GOAWAY_GRACE, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def goaway(self) -> None:
        """Graceful shutdown: no new calls; close once the current ones end."""
        if self.closed or self.core.going_away:
            return
        if self.session is None:
            self.close()
            return
        self.session.goaway()
