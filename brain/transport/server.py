"""The gRPC server: listening sockets, the registered handlers, graceful
stop. Shaped like grpc.aio.Server where brain uses it, so the rest of brain
need not know which transport serves it."""
from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from typing import Any, Awaitable, Callable, Iterable, Sequence

import grpc

from brain.transport.dispatch import HttpHandler
from brain.transport.h2.limits import MAX_SERVER_HELD_HEADERS, HeldHeaders
from brain.transport.h2.keepalive import Keepalive
from brain.transport.protocol import ClientConnection

DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024  # grpcio's default


class CallDetails(grpc.HandlerCallDetails):
    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str, invocation_metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Server:
    """Handlers are looked up, through the interceptors, once per method
    name and then reused: brain's handlers and interceptors depend on the
    method only, and a lookup per call would cost an await per call."""

    def __init__(
        self, options: Sequence[tuple[str, Any]] = (), interceptors: Sequence[Any] = (),
        http_handler: HttpHandler | None = None,
    ) -> None:
        """http_handler answers plain HTTP GETs on the same ports (path to
        status, content type, body), over HTTP/1.1 and HTTP/2; without it
        they get 404 or a refusal."""
        self.http_handler = http_handler
        opts = dict(options)
        # grpcio's option names, so that one option list configures either
        # server; what is not given keeps Keepalive's (gRPC's) default
        default = Keepalive()
        self.keepalive: Keepalive | None = Keepalive(
            interval=max(1.0, opts.get("grpc.keepalive_time_ms", default.interval * 1000) / 1000),
            timeout=opts.get("grpc.keepalive_timeout_ms", default.timeout * 1000) / 1000,
            min_time=opts.get("grpc.http2.min_ping_interval_without_data_ms", default.min_time * 1000) / 1000,
        )
        receive = opts.get("grpc.max_receive_message_length", DEFAULT_MAX_RECEIVE)
        self.max_receive = receive if receive >= 0 else 2**31 - 1
        self.connections: set[ClientConnection] = set()
        self.held_headers = HeldHeaders(MAX_SERVER_HELD_HEADERS)
        self._interceptors = list(interceptors)
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._cache: dict[str, grpc.RpcMethodHandler] = {}
        self._sockets: list[tuple[socket.socket, ssl.SSLContext | None]] = []
        self._servers: list[asyncio.Server] = []
        self._all_closed: asyncio.Event | None = None

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler

    def add_insecure_port(self, address: str) -> int:
        return self._add(address, None)

    def add_secure_port(self, address: str, context: ssl.SSLContext) -> int:
        return self._add(address, context)

    def _add(self, address: str, context: ssl.SSLContext | None) -> int:
        sock = _bind(address)
        self._sockets.append((sock, context))
        return sock.getsockname()[1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sock, context in self._sockets:
            # TLS is run by each connection itself (brain/transport/tls.py)
            server = await loop.create_server(functools.partial(ClientConnection, self, context), sock=sock)
            self._servers.append(server)

    def cached_handler(self, method: str) -> grpc.RpcMethodHandler | None:
        return self._cache.get(method)

    async def resolve(self, method: str, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcMethodHandler | None:
        async def base(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            found = self._registered.get(details.method)
            if found is not None:
                return found
            for generic in self._generic:
                found = generic.service(details)
                if found is not None:
                    return found
            return None

        chain: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]] = base
        for interceptor in reversed(self._interceptors):
            chain = _link(interceptor, chain)
        handler = await chain(CallDetails(method, metadata))
        if handler is not None:
            self._cache[method] = handler
        return handler

    def connection_made(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def connection_gone(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def stop(self, grace: float | None) -> None:
        """Stop accepting; GOAWAY to every client; let running calls finish
        for up to `grace` seconds; then cancel what is left."""
        for server in self._servers:
            server.close()
        self._all_closed = asyncio.Event()
        for conn in list(self.connections):
            conn.goaway()
        if self.connections and grace:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.connections):
            conn.fail(0, "server stopping")
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def wait_for_termination(self) -> None:
        for server in self._servers:
            await server.serve_forever()


def _link(interceptor: Any, nxt: Callable[[grpc.HandlerCallDetails], Awaitable[Any]]) -> Callable[[grpc.HandlerCallDetails], Awaitable[Any]]:
    def call(details: grpc.HandlerCallDetails) -> Awaitable[Any]:
        return interceptor.intercept_service(nxt, details)

    return call
