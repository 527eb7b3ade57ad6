"""Running a handler for one call: the four gRPC call shapes, and how the
outcome of a handler becomes a status (as grpc.aio does it)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from brain.wire import Pieces

from brain.transport.context import ServicerContext
from brain.transport.stream import Stream, StreamClosed

log = logging.getLogger("brain.transport")


def _failure(stream: Stream, ctx: ServicerContext, e: BaseException) -> None:
    if isinstance(e, grpc.aio.AbortError):
        stream.finish(ctx.code() or grpc.StatusCode.UNKNOWN, ctx.details())
    elif isinstance(e, StreamClosed):
        pass
    else:
        log.exception("unexpected error in %s", stream.method_name())
        stream.finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(e)}: {e}")


def _status(stream: Stream, ctx: ServicerContext) -> None:
    code = ctx.code()
    stream.finish(code if code is not None else grpc.StatusCode.OK, ctx.details())


def _failed(ctx: ServicerContext) -> bool:
    code = ctx.code()
    return code is not None and code != grpc.StatusCode.OK


async def unary_request(stream: Stream, handler: grpc.RpcMethodHandler, raw: bytes) -> None:
    """unary-unary and unary-stream calls, once the request is complete."""
    ctx = stream.ctx
    assert ctx is not None
    deserialize = handler.request_deserializer
    if deserialize is None:
        request: Any = raw
    else:
        try:
            request = deserialize(raw)
        except Exception:
            stream.finish(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
            return
    try:
        if handler.unary_unary is not None:
            response = await handler.unary_unary(request, ctx)
        else:
            await _responses(stream, handler, handler.unary_stream(request, ctx))
            _status(stream, ctx)
            return
    except asyncio.CancelledError:
        return  # client cancel, deadline or connection loss: no one to answer
    except Exception as e:
        _failure(stream, ctx, e)
        return
    code = ctx.status
    if code is not None and code != grpc.StatusCode.OK:
        _status(stream, ctx)
        return
    if type(response) is Pieces:
        stream.send_pieces(response)
        return
    try:
        payload = handler.response_serializer(response) if handler.response_serializer is not None else response
    except Exception:
        log.exception("cannot serialize the response of %s", stream.method_name())
        stream.finish(grpc.StatusCode.INTERNAL, "Failed to serialize response!")
        return
    stream.send_unary(payload)


async def streaming_request(stream: Stream, handler: grpc.RpcMethodHandler) -> None:
    """stream-unary and stream-stream calls, started with the headers."""
    ctx = stream.ctx
    assert ctx is not None and stream.requests is not None
    try:
        if handler.stream_unary is not None:
            response = await handler.stream_unary(stream.requests, ctx)
            if _failed(ctx):
                _status(stream, ctx)
                return
            payload = handler.response_serializer(response) if handler.response_serializer is not None else response
            stream.send_unary(payload)
            return
        await _responses(stream, handler, handler.stream_stream(stream.requests, ctx))
    except asyncio.CancelledError:
        return
    except Exception as e:
        _failure(stream, ctx, e)
        return
    _status(stream, ctx)


async def _responses(stream: Stream, handler: grpc.RpcMethodHandler, result: Any) -> None:
    """A streaming handler either yields its responses or writes them with
    context.write and returns."""
    if hasattr(result, "__aiter__"):
        serialize = handler.response_serializer
        async for item in result:
            await stream.write(serialize(item) if serialize is not None else item)
    elif result is not None:
        await result
