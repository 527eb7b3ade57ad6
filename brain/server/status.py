"""Handlers for the three call shapes brain serves, on either transport:
each parses its requests itself and ends its call with the status
brain/server/errors_grpc.py gives for what it raised.

Requests are parsed here rather than by the transport so that bytes which
are no protobuf message get grpc-go's answer (INTERNAL, "error unmarshalling
request" or "failed to unmarshal the received message"), as from etcd,
whichever transport serves the call.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from brain.server.errors_grpc import UNPARSABLE_REQUEST, UNPARSABLE_STREAM_MESSAGE, UnparsableRequest, abort
from brain.wire import Pieces

BidiFn = Callable[[AsyncIterator[Any], Any], AsyncIterator[Any]]


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def unary(fn: Callable[[Any], Awaitable[Any]], req_cls, resp_cls) -> grpc.RpcMethodHandler:
    parse = req_cls.FromString
    where = _name(fn)

    async def handler(raw: bytes, context):
        try:
            request = parse(raw)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INTERNAL, UNPARSABLE_REQUEST + str(e))
        try:
            return await fn(request)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await abort(context, e, where)

    return grpc.unary_unary_rpc_method_handler(handler, response_serializer=_serializer(resp_cls))


def server_stream(fn: Callable[[Any], AsyncIterator[Any]], req_cls, resp_cls) -> grpc.RpcMethodHandler:
    """A unary-stream method: fn(request) yields the responses."""
    parse = req_cls.FromString
    where = _name(fn)

    async def handler(raw: bytes, context):
        try:
            request = parse(raw)
        except DecodeError as e:
            # grpc-go reads a server-streaming call's request as a stream message
            await context.abort(grpc.StatusCode.INTERNAL, UNPARSABLE_STREAM_MESSAGE + str(e))
        try:
            async for resp in fn(request):
                yield resp
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await abort(context, e, where)

    return grpc.unary_stream_rpc_method_handler(handler, response_serializer=_serializer(resp_cls))


def bidi_stream(fn: BidiFn, req_cls, resp_cls) -> grpc.RpcMethodHandler:
    """A stream-stream method: fn(requests, context) yields the responses.
    A request that does not parse raises UnparsableRequest where fn reads it;
    whatever fn raises ends the call with its status."""
    parse = req_cls.FromString
    where = _name(fn)

    async def parsed(raw_requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for raw in raw_requests:
            try:
                request = parse(raw)
            except DecodeError as e:
                raise UnparsableRequest(str(e)) from None
            yield request

    async def handler(raw_requests: AsyncIterator[bytes], context):
        try:
            async for resp in fn(parsed(raw_requests), context):
                yield resp
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await abort(context, e, where)

    return grpc.stream_stream_rpc_method_handler(handler, response_serializer=_serializer(resp_cls))


def _serializer(resp_cls) -> Callable[[Any], bytes]:
    """resp_cls's serializer, passing through a response a service has
    already serialized (bytes)."""
    serialize = resp_cls.SerializeToString

    def serializer(resp: Any) -> bytes:
        if type(resp) is bytes:
            return resp
        if type(resp) is Pieces:  # grpcio's server takes one buffer
            return resp.join()
        return serialize(resp)

    return serializer


def generic(service: str, methods: dict[str, grpc.RpcMethodHandler]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(service, methods)
