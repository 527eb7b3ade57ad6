"""Data that the workloads read, written once per server before the timed
window (the 10k-key list prefix, the single key of `get`), and the final
cleanup of everything the run wrote on an endpoint that outlives the run."""
from __future__ import annotations

import asyncio
import time

import grpc

from bench import keys
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc

SETUP_TIMEOUT_S = 300.0
_SETUP_INFLIGHT = 64
# keys that the Go load generator writes (its put workload is not driven)
ETCDLOAD_KEYS = ((b"/bench/one", b""), (b"/bench/watch/", keys.prefix_end(b"/bench/watch/")))


def _channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)])


async def _prepare(target: str, workload: str, value_size: int, list_keys: int) -> None:
    async with _channel(target) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        value = b"x" * value_size
        if workload == "get":
            await kv.Put(rpc_pb2.PutRequest(key=keys.GET_KEY, value=value), timeout=30)
        elif workload == "list":
            end = keys.prefix_end(keys.LIST_PREFIX)
            have = await kv.Range(rpc_pb2.RangeRequest(key=keys.LIST_PREFIX, range_end=end, count_only=True), timeout=30)
            if have.count == list_keys:
                return  # written by an earlier round
            await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=keys.LIST_PREFIX, range_end=end), timeout=60)
            deadline = time.monotonic() + SETUP_TIMEOUT_S
            todo = iter(range(list_keys))

            async def writer() -> None:
                for i in todo:  # shared iterator: each key written once
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"writing the {list_keys}-key list prefix took over {SETUP_TIMEOUT_S:.0f} s")
                    await kv.Put(rpc_pb2.PutRequest(key=keys.list_key(i), value=value), timeout=30)

            await asyncio.gather(*(writer() for _ in range(_SETUP_INFLIGHT)))


def prepare(target: str, workload: str, value_size: int, list_keys: int) -> None:
    asyncio.run(_prepare(target, workload, value_size, list_keys))


async def _cleanup(target: str, etcdload_used: bool) -> None:
    async with _channel(target) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        ranges = [(keys.PREFIX, keys.prefix_end(keys.PREFIX))]
        if etcdload_used:
            ranges += list(ETCDLOAD_KEYS)
        for key, end in ranges:
            await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key, range_end=end), timeout=120)


def cleanup(target: str, etcdload_used: bool) -> None:
    """Delete every key the run wrote (leases are revoked by their workload)."""
    asyncio.run(_cleanup(target, etcdload_used))
