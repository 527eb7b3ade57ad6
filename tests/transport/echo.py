"""A test service on the h2 transport, run on its own event loop thread:
echo, sleep, abort, big responses, server and bidi streams, on raw bytes."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import grpc

from brain.transport import Server

SERVICE = "test.Echo"


class EchoService:
    def __init__(self) -> None:
        self.cancelled: list[str] = []  # names of calls whose done callback saw a cancel
        self.metadata: list[tuple[tuple[str, str], ...]] = []

    async def unary(self, request: bytes, context) -> bytes:
        self.metadata.append(context.invocation_metadata())
        return request

    async def sleep(self, request: bytes, context) -> bytes:
        context.add_done_callback(lambda ctx: self.cancelled.append("sleep") if ctx.cancelled() else None)
        await asyncio.sleep(float(request.decode()))
        return b"slept"

    async def abort(self, request: bytes, context) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, request.decode())
        return b""

    async def big(self, request: bytes, context) -> bytes:
        return b"x" * int(request.decode())

    async def count(self, request: bytes, context):
        for i in range(int(request.decode())):
            yield str(i).encode()

    async def bidi(self, requests, context):
        context.add_done_callback(lambda ctx: self.cancelled.append("bidi") if ctx.cancelled() else None)
        async for msg in requests:
            if msg == b"abort":
                await context.abort(grpc.StatusCode.ABORTED, "asked to")
            await context.write(msg)

    async def gather(self, requests, context) -> bytes:
        return b"".join([m async for m in requests])

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
            "Abort": grpc.unary_unary_rpc_method_handler(self.abort),
            "Big": grpc.unary_unary_rpc_method_handler(self.big),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Gather": grpc.stream_unary_rpc_method_handler(self.gather),
        })


class ServerThread:
    """The server on a uvloop loop in a thread, so tests can use grpcio's
    blocking client."""

    def __init__(self, max_receive: int = 64 * 1024 * 1024, tls=None) -> None:
        self.service = EchoService()
        self.max_receive = max_receive
        self.tls = tls
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready: Future[int] = Future()
        self._stop: asyncio.Event | None = None

    def start(self) -> ServerThread:
        self._thread.start()
        self.port = self._ready.result(10)
        return self

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = Server(options=[("grpc.max_receive_message_length", self.max_receive)])
        server.add_generic_rpc_handlers([self.service.handler()])
        port = server.add_secure_port("127.0.0.1:0", self.tls) if self.tls else server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self._ready.set_result(port)
        await self._stop.wait()
        await server.stop(2.0)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
