"""etcdserverpb.Watch: the bidirectional Watch stream.

Each gRPC stream is one brain.watch.WatchStream: a reader task hands the
client's requests to it, and the handler itself is the sender, yielding the
responses its outbox holds as fast as the client takes them. Event responses
are already wire bytes (see brain/watch/response.py), so the serializer
passes bytes through and serializes only message objects.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

import grpc

from brain.etcdpb import rpc_pb2
from brain.mvcc.kv import KV
from brain.server.config import GRPC_OVERHEAD_BYTES
from brain.server.header import Header
from brain.server.status import bidi_stream, generic
from brain.watch import WatchHub, WatchStream

pb = rpc_pb2


class WatchService:
    def __init__(
        self,
        store: KV,
        header: Header,
        progress_notify_interval: float,
        max_request_bytes: int,
        **hub_options,
    ) -> None:
        self.header = header
        self.hub = WatchHub(
            store, header,
            progress_interval=progress_notify_interval,
            # etcd's watch server: responses split past the request limit
            # plus the gRPC overhead it allows
            fragment_limit=max_request_bytes + GRPC_OVERHEAD_BYTES,
            **hub_options,
        )

    async def watch(self, requests: AsyncIterator[pb.WatchRequest], context) -> AsyncIterator[bytes]:
        stream = self.hub.open_stream()
        reader = asyncio.get_running_loop().create_task(self._read(requests, stream))
        box = stream.outbox
        try:
            while True:
                out = box.pop()
                if out is None:
                    if box.closed:
                        break
                    await box.wait()
                elif isinstance(out, bytes):
                    yield out
                else:
                    for piece in out:  # a fragmented response
                        yield piece
        finally:
            reader.cancel()
            stream.close()
            failure = reader.exception() if reader.done() and not reader.cancelled() else None
        if failure is not None:
            # what ended the reading ends the call with its status (a
            # request that did not parse: INTERNAL, as from etcd)
            raise failure

    async def _read(self, requests: AsyncIterator[pb.WatchRequest], stream: WatchStream) -> None:
        try:
            async for req in requests:
                stream.handle(req)
        except BaseException:
            stream.close()  # wakes the sender, which raises what ended the reading
            raise
        # the client closing its side ends nothing: like etcd, the stream
        # goes on sending until the call ends

    def handler(self) -> grpc.GenericRpcHandler:
        return generic(
            "etcdserverpb.Watch",
            {
                "Watch": bidi_stream(self.watch, pb.WatchRequest, pb.WatchResponse),
            },
        )
