"""Watch fan-out with the Python client: watcher processes hold W watchers
on one prefix over S streams; a writer process puts P keys under it with a
few puts in flight. Every put carries its send time (time.monotonic(), one
clock for all processes on Linux) in its first 8 bytes, so each watcher
measures the lag of every event it receives."""
from __future__ import annotations

import asyncio
import struct
import time
from array import array
from collections import Counter
from typing import Any

import grpc

from bench import keys
from bench.closedloop import cpu_seconds
from bench.job import RPC_TIMEOUT_S, ChildJob
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc

_STAMP = struct.Struct("<d")
# how long watchers wait for the last events after the writer stops, at most
DRAIN_LIMIT_S = 30.0


def _puts_done_slot(counters) -> int:
    return len(counters) - 1


class Writer:
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel], counters) -> None:
        self.job = job
        self.kv = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        self.counters = counters
        self.prefix = keys.run_prefix("watch", job.tag)
        self.pad = b"x" * max(0, job.settings.value_size - _STAMP.size)

    async def prepare(self) -> None:
        await asyncio.gather(*(s.Range(rpc_pb2.RangeRequest(key=keys.GET_KEY, limit=1), timeout=RPC_TIMEOUT_S) for s in self.kv))

    async def cleanup(self) -> None:
        pass

    async def run(self, t_start: float, t_end: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        cpu0 = cpu_seconds()
        todo = iter(range(self.job.settings.watch_puts))
        lat = array("d")
        errors: Counter[str] = Counter()
        rate = self.job.settings.watch_put_rate
        paced_from = time.monotonic()

        async def worker(slot: int) -> None:
            kv = self.kv[slot % len(self.kv)]
            for i in todo:  # shared iterator: bounded by the put count
                if rate:
                    # put i is due at i/rate seconds into the run
                    await asyncio.sleep(max(0.0, paced_from + i / rate - time.monotonic()))
                t0 = time.monotonic()
                if t0 >= t_end:
                    return
                key = self.prefix + f"{i:08d}".encode()
                try:
                    await kv.Put(rpc_pb2.PutRequest(key=key, value=_STAMP.pack(t0) + self.pad), timeout=RPC_TIMEOUT_S)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    continue
                lat.append(time.monotonic() - t0)

        await asyncio.gather(*(worker(s) for s in range(self.job.slots)))
        end = time.monotonic()
        # tells the watchers how many events each of them must receive
        self.counters[_puts_done_slot(self.counters)] = len(lat)
        return {
            "ops": len(lat), "lat": lat, "errors": dict(errors), "first_error": None,
            "cpu_s": cpu_seconds() - cpu0, "end": end, "extra": {},
        }


class Watcher:
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel], counters) -> None:
        self.job = job
        self.channels = channels
        self.counters = counters
        self.calls: list = []

    async def prepare(self) -> None:
        prefix = keys.run_prefix("watch", self.job.tag)
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=prefix, range_end=keys.prefix_end(prefix)))
        streams = max(1, min(self.job.streams, self.job.slots))
        for s in range(streams):
            # watchers spread evenly over the streams
            n = self.job.slots // streams + (1 if s < self.job.slots % streams else 0)
            call = rpc_pb2_grpc.WatchStub(self.channels[s % len(self.channels)]).Watch()
            self.calls.append(call)
            for _ in range(n):
                await call.write(create)
            created = 0
            for _ in range(n):  # one answer per create request
                resp = await asyncio.wait_for(call.read(), RPC_TIMEOUT_S)
                if resp is grpc.aio.EOF or not resp.created:
                    raise RuntimeError(f"watch create refused: {resp}")
                created += 1

    async def cleanup(self) -> None:
        pass

    async def run(self, t_start: float, t_end: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        cpu0 = cpu_seconds()
        lat = array("d")
        got = 0
        last = 0.0
        unpack = _STAMP.unpack_from

        async def reader(call) -> None:
            nonlocal got, last
            while True:  # ends when the call is cancelled below, or by the server
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return
                now = time.monotonic()
                for ev in resp.events:
                    lat.append(now - unpack(ev.kv.value)[0])
                if resp.events:
                    got += len(resp.events)
                    last = now

        tasks = [asyncio.create_task(reader(c)) for c in self.calls]
        slot = _puts_done_slot(self.counters)
        deadline = t_end + min(DRAIN_LIMIT_S, max(1.0, self.job.settings.duration))
        expected: int | None = None
        while time.monotonic() < deadline:
            self.counters[self.job.index] = got
            puts = self.counters[slot]
            if puts >= 0:
                expected = puts * self.job.slots
                if got >= expected:
                    break
            await asyncio.sleep(0.02)
        self.counters[self.job.index] = got
        for c in self.calls:
            c.cancel()
        errors: Counter[str] = Counter()
        first_error = None
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() != grpc.StatusCode.CANCELLED:
                errors[outcome.code().name] += 1
                first_error = first_error or f"watch stream: {outcome.code().name}: {outcome.details()}"
        return {
            "ops": got, "lat": lat, "errors": dict(errors), "first_error": first_error,
            "cpu_s": cpu_seconds() - cpu0, "end": last or t_start,
            "extra": {"expected": expected, "watchers": self.job.slots},
        }
