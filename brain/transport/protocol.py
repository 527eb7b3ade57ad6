"""The asyncio side of a client connection: socket bytes into the HTTP/2
core, the core's events to the gRPC layer, the core's output to the socket.

Everything the bytes of one data_received call produce (acks, window
updates, responses of handlers that finish at once) leaves in one
transport.write; output of handlers that finish later is collected until
the event loop's next turn, so responses completing together share a write.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from brain.transport.dispatch import GrpcSession, HandlerSource
from brain.transport.h2 import frames
from brain.transport.h2.core import H2Connection
from brain.transport.h2.settings import LocalSettings

log = logging.getLogger("brain.transport")

# What clients may send ahead: credited back as data arrives, so these only
# bound what one connection buffers.
LOCAL_SETTINGS = LocalSettings(
    initial_window=4 * 1024 * 1024,
    connection_window=16 * 1024 * 1024,
    max_header_list=1024 * 1024,
)
# Output collected for the event loop's next turn is written at once when it
# passes this size: a burst (one put fanned out to many watchers, encoded by
# many stream tasks in one turn) starts reaching the client while the rest is
# still being encoded.
FLUSH_BYTES = 64 * 1024


class Acceptor(HandlerSource, Protocol):
    """What a connection needs of the server that accepted it."""

    def connection_made(self, conn: ClientConnection) -> None: ...

    def connection_gone(self, conn: ClientConnection) -> None: ...


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: Acceptor) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.paused = False
        self.closed = False
        self.core = H2Connection(LOCAL_SETTINGS, self._output_queued, FLUSH_BYTES)
        self.session: GrpcSession | None = None
        self._receiving = False
        self._flush_scheduled = False

    # Link

    def writes_paused(self) -> bool:
        return self.paused

    def peer_identities(self) -> list[bytes] | None:
        """The client certificate's common names, as grpcio reports them."""
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            return None
        names = [v.encode() for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        return names or None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        addr = transport.get_extra_info("peername")
        if isinstance(addr, tuple) and len(addr) >= 2:
            host, port = addr[0], addr[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self.server.connection_made(self)
        self.session = GrpcSession(self.core, self, self.server)
        self.core.initiate()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.core.discard_output()
        if self.session is not None:
            self.session.connection_lost()
        self.server.connection_gone(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None:
            self.session.writable()

    def data_received(self, data: bytes) -> None:
        if self.closed:
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

    # output

    def _output_queued(self, queued: int) -> None:
        if self._receiving:
            return
        if queued >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.core.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    # ending

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY and close."""
        if self.closed:
            return
        log.info("HTTP/2 connection error from %s: %s", self.peer, message)
        self.core.terminate(code, message)
        if self.session is not None:
            self.session.connection_lost()
        self._close_now()

    def _close_now(self) -> None:
        self.closed = True
        self.flush()
        self.close()

    def goaway(self) -> None:
        """Graceful shutdown: no new calls; close once the current ones end."""
        if self.closed or self.core.going_away:
            return
        if self.session is None:
            self.close()
            return
        self.session.goaway()
