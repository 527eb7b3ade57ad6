"""The one place where exceptions become gRPC statuses."""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from brain.errors import EtcdError
from brain.wire import Pieces

log = logging.getLogger(__name__)


async def _unparsable(context, e: DecodeError) -> None:
    # requests are parsed by the handlers rather than by grpc, so that bytes
    # which are no protobuf get gRPC's INTERNAL "error unmarshalling
    # request", as from etcd
    await context.abort(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {e}")


async def _abort(fn: Callable, context, e: Exception) -> None:
    """The status of a handler's exception: etcd's for an EtcdError; a bug
    costs one request, not the server."""
    if isinstance(e, EtcdError):
        await context.abort(e.code, e.message)
    log.exception("unexpected error in %s", getattr(fn, "__qualname__", fn))
    await context.abort(grpc.StatusCode.UNKNOWN, f"brain: internal error: {e.__class__.__name__}")


def unary(fn: Callable[[Any], Awaitable[Any]], req_cls, resp_cls) -> grpc.RpcMethodHandler:
    parse = req_cls.FromString

    async def handler(raw: bytes, context):
        try:
            request = parse(raw)
        except DecodeError as e:
            await _unparsable(context, e)
        try:
            return await fn(request)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort(fn, context, e)

    return grpc.unary_unary_rpc_method_handler(handler, response_serializer=_serializer(resp_cls))


def server_stream(fn: Callable[[Any], AsyncIterator[Any]], req_cls, resp_cls) -> grpc.RpcMethodHandler:
    """A unary-stream method: fn(request) yields the responses; errors map to
    statuses as in unary()."""
    parse = req_cls.FromString

    async def handler(raw: bytes, context):
        try:
            request = parse(raw)
        except DecodeError as e:
            await _unparsable(context, e)
        try:
            async for resp in fn(request):
                yield resp
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort(fn, context, e)

    return grpc.unary_stream_rpc_method_handler(handler, response_serializer=_serializer(resp_cls))


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
