"""What a handler sees of its call: the subset of grpc.aio.ServicerContext
that brain's services use, over one HTTP/2 stream."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable, Protocol

import grpc

Metadata = tuple[tuple[str, str], ...]


class CallState(Protocol):
    """What a context needs of the call it describes."""

    closed: bool
    cancelled: bool
    requests: RequestStream | None

    def metadata(self) -> Metadata: ...

    def peer(self) -> str: ...

    def peer_identities(self) -> list[bytes] | None: ...

    def send_headers(self) -> None: ...

    def add_done_callback(self, callback: Callable[[], None]) -> None: ...

    async def write(self, payload: bytes) -> None: ...


class ServicerContext:
    __slots__ = ("_stream", "status", "_details", "_deadline", "_serializer")

    def __init__(self, stream: CallState, deadline: float | None, serializer: Callable[[Any], bytes] | None) -> None:
        self._stream = stream
        # the code set by the handler (None: none set), read by the call's runner
        self.status: grpc.StatusCode | None = None
        self._details: str | None = None
        self._deadline = deadline
        self._serializer = serializer

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()) -> None:
        if code == grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN  # as grpcio: abort means failure
        self.status = code
        self._details = details
        raise grpc.aio.AbortError(details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def details(self) -> str | None:
        return self._details

    def invocation_metadata(self) -> Metadata:
        return self._stream.metadata()

    def peer(self) -> str:
        return self._stream.peer()

    def peer_identities(self) -> list[bytes] | None:
        return self._stream.peer_identities()

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def cancelled(self) -> bool:
        return self._stream.cancelled

    def done(self) -> bool:
        return self._stream.closed

    def add_done_callback(self, callback: Callable[[ServicerContext], None]) -> None:
        self._stream.add_done_callback(lambda: callback(self))

    async def send_initial_metadata(self, metadata: Metadata = ()) -> None:
        self._stream.send_headers()

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        pass  # brain sends none

    async def write(self, message: Any) -> None:
        payload = self._serializer(message) if self._serializer is not None else message
        await self._stream.write(payload)

    async def read(self) -> Any:
        requests = self._stream.requests
        if requests is None:
            raise RuntimeError("read() on a call without a request stream")
        return await requests.read()


class EndOfRequests(Exception):
    pass


class RequestStream:
    """The client's messages of a streaming call, as an async iterator.
    Messages are held as they arrived, in runs of whole messages with their
    5-byte prefixes (a DATA frame's worth, checked by the reader), and split
    only as the handler reads them: a client sending many small messages
    ahead makes the call hold their bytes, not an object per message. Each
    run's bytes are credited back to the client (`credit`) once the handler
    has taken its last message, so the HTTP/2 window bounds how much a client
    may send ahead of its handler."""

    __slots__ = ("_items", "_offset", "_ended", "_waiter", "_deserializer", "_error", "_credit")

    def __init__(self, deserializer: Callable[[bytes], Any] | None, credit: Callable[[int], None]) -> None:
        self._items: deque[tuple[bytes, int]] = deque()  # a run of messages, bytes to credit when it is taken
        self._offset = 0  # where the first run's next message starts
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._deserializer = deserializer
        self._error: BaseException | None = None
        self._credit = credit

    def resolved(self, deserializer: Callable[[bytes], Any] | None) -> None:
        """The messages held while the method was looked up are for a
        handler that reads them with this deserializer."""
        self._deserializer = deserializer

    def take_all(self) -> list[bytes]:
        """The messages held while the method was looked up, for a unary
        handler (their bytes are credited)."""
        messages = []
        while self._items:
            messages.append(self._next())
        return messages

    def push(self, framed: bytes, credit: int) -> None:
        """One or more whole messages, each with its prefix."""
        self._items.append((framed, credit))
        self._wake()

    def drop(self) -> int:
        """Forget the messages not taken; the bytes they would have credited."""
        n = sum(credit for _, credit in self._items)
        self._items.clear()
        self._offset = 0
        return n

    def _next(self) -> bytes:
        """The first message held (there is one); its run's bytes are
        credited when it is the run's last."""
        framed, credit = self._items[0]
        pos = self._offset
        end = pos + 5 + int.from_bytes(framed[pos + 1:pos + 5], "big")
        if end < len(framed):
            self._offset = end
            return framed[pos + 5:end]
        self._items.popleft()
        self._offset = 0
        if credit:
            self._credit(credit)
        return framed[pos + 5:]

    def end(self, error: BaseException | None = None) -> None:
        self._ended = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> Any:
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return grpc.aio.EOF
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        raw = self._next()
        return self._deserializer(raw) if self._deserializer is not None else raw

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Any:
        item = await self.read()
        if item is grpc.aio.EOF:
            raise StopAsyncIteration
        return item
