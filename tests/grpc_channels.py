"""Every gRPC channel the tests open gets its own subchannel pool.

grpcio shares connections between channels to the same address through a
process-wide pool, and a connection that failed stays there in backoff. A
test whose server was given a port an earlier test's server had would then
see "Connection refused" from a channel it has just opened, while its own
server is listening. The option is added to every channel, the ones the
etcd client libraries open included."""
from __future__ import annotations

import functools
from typing import Any, Callable

import grpc
import grpc.aio

LOCAL_POOL = ("grpc.use_local_subchannel_pool", 1)


def _with_local_pool(make: Callable[..., Any], options_at: int) -> Callable[..., Any]:
    @functools.wraps(make)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) > options_at:
            args = (*args[:options_at], [*(args[options_at] or ()), LOCAL_POOL], *args[options_at + 1:])
        else:
            kwargs["options"] = [*(kwargs.get("options") or ()), LOCAL_POOL]
        return make(*args, **kwargs)
    return wrapper


def install() -> None:
    # insecure_channel(target, options, ...); secure_channel(target, credentials, options, ...)
    grpc.insecure_channel = _with_local_pool(grpc.insecure_channel, 1)
    grpc.secure_channel = _with_local_pool(grpc.secure_channel, 2)
    grpc.aio.insecure_channel = _with_local_pool(grpc.aio.insecure_channel, 1)
    grpc.aio.secure_channel = _with_local_pool(grpc.aio.secure_channel, 2)
