"""A test double of a network path that can be partitioned: a TCP proxy on
another loopback address (127.0.0.x) that relays to 127.0.0.1 on the same
ports, and connects out from its own address, so the server sees that
address as the client's (the fake TiKV's --advertise-caller-host then gives
the client this proxy as PD's and the store's address).

cut() stops relaying in both directions without closing anything, as a
partition does (the bytes wait, nothing is refused); heal() lets them
through again. It runs its own event loop in a thread of the test.
"""
from __future__ import annotations

import asyncio
import socket
import threading


class CuttableProxy:
    def __init__(self, host: str, ports: list[int], target_host: str = "127.0.0.1") -> None:
        self.host = host
        self.ports = ports
        self.target_host = target_host
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> CuttableProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._open.set()
        for port in self.ports:
            self._servers.append(await asyncio.start_server(
                lambda r, w, port=port: self._relay(r, w, port), self.host, port, reuse_address=True))

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, port: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._open.wait()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((self.host, 0))  # the server sees this address as the client's
            sock.setblocking(False)
            await self._loop.sock_connect(sock, (self.target_host, port))
            server_r, server_w = await asyncio.open_connection(sock=sock)
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._open.wait()  # a partition holds what was in flight
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def stop(self) -> None:
        async def close() -> None:
            self._open.set()
            for s in self._servers:
                s.close()
            for t in list(self._tasks):
                t.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
