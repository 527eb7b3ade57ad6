"""The closed loop of one client process: `slots` coroutines, each sending
its next request when the last one is answered, from t_start until t_end (or
a cap on the count), with every latency kept."""
from __future__ import annotations

import asyncio
import resource
import time
from array import array
from collections import Counter
from typing import Any

import grpc

from bench.job import ChildJob
from bench.ops import OPS, CheckFailed


def cpu_seconds() -> float:
    """This process's CPU time, every thread included (gRPC polls on its own threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class ClosedLoop:
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel], counters) -> None:
        self.job = job
        self.op = OPS[job.workload](job, channels)
        self.counters = counters
        self.done = 0

    async def prepare(self) -> None:
        await self.op.prepare()

    async def cleanup(self) -> None:
        await self.op.cleanup()

    async def run(self, t_start: float, t_end: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        cpu0, w0 = cpu_seconds(), time.monotonic()
        lat = array("d")
        errors: Counter[str] = Counter()
        first_error: list[str] = []
        cap = max(1, self.job.settings.max_ops_per_proc // max(1, self.job.slots))
        op = self.op

        async def worker(slot: int) -> None:
            for i in range(cap):
                t0 = time.monotonic()
                if t0 >= t_end:
                    return
                try:
                    await op.call(slot, i)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    first_error[:] = first_error or [f"{e.code().name}: {e.details()}"]
                    # a refusing server must not turn this into a busy loop
                    await asyncio.sleep(0.01)
                    continue
                except CheckFailed as e:
                    errors["check"] += 1
                    first_error[:] = first_error or [str(e)]
                    continue
                lat.append(time.monotonic() - t0)
                self.done += 1

        ticker = asyncio.create_task(self._tick(t_end))
        await asyncio.gather(*(worker(s) for s in range(self.job.slots)))
        ticker.cancel()
        end = time.monotonic()
        extra = op.extra() if hasattr(op, "extra") else {}
        return {
            "ops": len(lat),
            "lat": lat,
            "errors": dict(errors),
            "first_error": first_error[0] if first_error else None,
            "cpu_s": cpu_seconds() - cpu0,
            "busy_wall_s": end - w0,
            "end": end,
            "extra": extra,
        }

    async def _tick(self, t_end: float) -> None:
        # bounded: stops with the window (plus the longest request)
        while time.monotonic() < t_end + 60:
            self.counters[self.job.index] = self.done
            await asyncio.sleep(0.1)
