"""Writes on a follower go to the leader: the gRPC call, proxied.

A ForwardingHandler wraps the server's generic handlers. For the methods
that write (and the lease methods, whose state lives on the leader), it asks
the router where the call is served: here, when this member leads; else at
the leader's client URL, over one grpc.aio channel per leader, and the
leader's answer (or error status) is the answer. Calls are proxied as bytes,
requests and responses alike, never parsed here.

A call made while no leader is known waits for one (up to `wait`). A call
the leader never received (its connection failed) is sent again to the next
leader; one that may have reached it is not, since a write is not
idempotent: its error goes to the client, as etcd's would after a leader
change.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Protocol, Sequence

import grpc

from brain.errors import NoLeaderError
from brain.server.errors_grpc import abort

log = logging.getLogger(__name__)

# The methods served by the leader only: everything that writes, and the
# lease methods (the leader alone keeps the leases' deadlines).
LEADER_METHODS = frozenset({
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Maintenance/MoveLeader",
})


class Router(Protocol):
    def serves_locally(self) -> bool:
        """Whether this member leads (and has taken up its duties)."""
        ...

    def leader_url(self) -> str | None:
        """The leader's client URL, when another member leads."""
        ...

    async def leader_changed(self, timeout: float) -> None:
        """Return when the known leader may have changed, or after timeout."""
        ...


def _target(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _unreached(e: grpc.aio.AioRpcError) -> bool:
    """Whether the call certainly never reached the leader."""
    details = (e.details() or "").lower()
    return e.code() == grpc.StatusCode.UNAVAILABLE and ("failed to connect" in details or "connection refused" in details)


class Forwarder:
    def __init__(self, router: Router, wait: float, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.router = router
        self.wait = wait
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.forwarded = 0  # calls sent to the leader, for /metrics

    def channel(self, url: str) -> grpc.aio.Channel:
        ch = self._channels.get(url)
        if ch is None:
            options = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
            if url.startswith("https://") and self.credentials is not None:
                ch = grpc.aio.secure_channel(_target(url), self.credentials, options=options)
            else:
                ch = grpc.aio.insecure_channel(_target(url), options=options)
            self._channels[url] = ch
        return ch

    async def route(self, avoid: str | None = None) -> str | None:
        """None to serve here, else the leader URL to forward to; waits for
        a leader (other than `avoid`, one that could not be reached)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        router = self.router
        while True:
            if router.serves_locally():
                return None
            url = router.leader_url()
            if url is not None and url != avoid:
                return url
            left = deadline - loop.time()
            if left <= 0:
                raise NoLeaderError()
            await router.leader_changed(min(left, 0.1))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    def wrap(self, handlers: Sequence[grpc.GenericRpcHandler]) -> list[grpc.GenericRpcHandler]:
        return [ForwardingHandler(self, h) for h in handlers]


class ForwardingHandler(grpc.GenericRpcHandler):
    def __init__(self, forwarder: Forwarder, inner: grpc.GenericRpcHandler) -> None:
        self.forwarder = forwarder
        self.inner = inner
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        local = self.inner.service(details)
        method = details.method
        if local is None or method not in LEADER_METHODS:
            return local
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(method, local)
        return wrapped

    def _wrap(self, method: str, local: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        fwd = self.forwarder
        if local.unary_unary is not None:
            serve_local = local.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                avoid: str | None = None
                while True:
                    try:
                        url = await fwd.route(avoid)
                    except NoLeaderError as e:
                        await abort(context, e, method)
                    if url is None:
                        return await serve_local(request, context)
                    call = fwd.channel(url).unary_unary(method)  # bytes in, bytes out
                    try:
                        fwd.forwarded += 1
                        return await call(request, timeout=context.time_remaining())
                    except grpc.aio.AioRpcError as e:
                        if _unreached(e):
                            log.info("leader %s unreachable for %s; waiting for another", url, method)
                            avoid = url
                            continue
                        await context.abort(e.code(), e.details() or "")

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=local.request_deserializer, response_serializer=local.response_serializer
            )
        assert local.stream_stream is not None, method
        serve_stream = local.stream_stream

        async def streams(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            try:
                url = await fwd.route()
            except NoLeaderError as e:
                await abort(context, e, method)
            if url is None:
                async for resp in serve_stream(requests, context):
                    yield resp
                return
            fwd.forwarded += 1
            call = fwd.channel(url).stream_stream(method)(requests)  # bytes in, bytes out
            try:
                async for resp in call:
                    yield resp
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")

        return grpc.stream_stream_rpc_method_handler(
            streams, request_deserializer=local.request_deserializer, response_serializer=local.response_serializer
        )

