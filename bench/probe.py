"""Which optional etcd services an endpoint serves: a workload that needs one
it lacks is skipped with a message instead of failing mid-run."""
from __future__ import annotations

import asyncio

import grpc

from bench import keys
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc


async def _watch(ch: grpc.aio.Channel) -> str | None:
    call = rpc_pb2_grpc.WatchStub(ch).Watch()
    try:
        await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=keys.PREFIX + b"probe")))
        resp = await asyncio.wait_for(call.read(), 5)
        if resp is grpc.aio.EOF or not resp.created:
            return "Watch did not confirm a new watcher"
        return None
    except grpc.aio.AioRpcError as e:
        return f"Watch: {e.code().name} {e.details()}"
    except asyncio.TimeoutError:
        return "Watch: no answer to a create request within 5 s"
    finally:
        call.cancel()


async def _lease(ch: grpc.aio.Channel) -> str | None:
    stub = rpc_pb2_grpc.LeaseStub(ch)
    try:
        resp = await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10), timeout=5)
        await stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=resp.ID), timeout=5)
        return None
    except grpc.aio.AioRpcError as e:
        return f"Lease: {e.code().name} {e.details()}"


async def _missing(target: str) -> dict[str, str]:
    async with grpc.aio.insecure_channel(target) as ch:
        out: dict[str, str] = {}
        for name, check in (("watch", _watch), ("lease", _lease)):
            why = await check(ch)
            if why is not None:
                out[name] = why
        return out


def missing_services(target: str) -> dict[str, str]:
    """{"watch" | "lease": why it is unusable} for each service not served."""
    return asyncio.run(_missing(target))
