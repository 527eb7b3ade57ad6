"""etcd's space quota (--quota-backend-bytes).

etcd refuses a write when the database's size plus the write's cost would
reach the quota: the request fails with "etcdserver: mvcc: database space
exceeded" and the server raises the NOSPACE alarm, which then refuses every
Put, Txn with puts and LeaseGrant until a client disarms it. The cost of a
Put is its key and value plus a fixed overhead; of a Txn, the puts of its
larger branch (nested txns count nothing); of a LeaseGrant, a fixed overhead;
anything else costs nothing. etcd 3.5 compares even a zero cost with the
quota, so a Txn without puts is refused too while the database is at or over
the quota; DeleteRange, Range and Compact never are.

The database's size here is the engine's bytes on disk. Measuring it costs
a directory scan, far too much for every write, so it is measured by a
background task (on a thread) and the cost of every write admitted since is
added to the last measure. The write paths then test the quota with one sum
and one comparison (`admits`).
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from typing import Callable

from brain import errors
from brain.etcdpb import rpc_pb2
from brain.server.alarms import NOSPACE, AlarmStore

log = logging.getLogger(__name__)

DEFAULT_QUOTA_BYTES = 2 * 1024**3  # etcd's, for --quota-backend-bytes 0
MAX_QUOTA_BYTES = 8 * 1024**3  # above this etcd warns, and still uses the quota
# etcd's estimates of what a key-value and a lease take beyond their bytes
KV_OVERHEAD = 256
LEASE_OVERHEAD = 64
DEFAULT_MEASURE_INTERVAL = 1.0  # seconds between measures of the engine's size

# the limit of a disabled quota: no sum of costs reaches it
_UNLIMITED = sys.maxsize


def quota_limit(quota_backend_bytes: int) -> int:
    """The limit etcd applies for a --quota-backend-bytes value: its default
    for 0, none for a negative value, the value itself otherwise."""
    if quota_backend_bytes < 0:
        return _UNLIMITED
    if quota_backend_bytes == 0:
        return DEFAULT_QUOTA_BYTES
    return quota_backend_bytes


def put_cost(p: rpc_pb2.PutRequest) -> int:
    return KV_OVERHEAD + len(p.key) + len(p.value)


def txn_cost(t: rpc_pb2.TxnRequest) -> int:
    success = 0
    for op in t.success:
        if op.HasField("request_put"):
            success += put_cost(op.request_put)
    failure = 0
    for op in t.failure:
        if op.HasField("request_put"):
            failure += put_cost(op.request_put)
    return failure if failure > success else success


@dataclass
class SpaceQuota:
    limit: int
    alarms: AlarmStore
    member_id: int
    # the engine's bytes on disk; None for an engine that cannot tell, whose
    # writes the quota then never refuses
    measure: Callable[[], int] | None
    measure_interval: float = DEFAULT_MEASURE_INTERVAL
    # the last measure plus the cost of every write admitted since
    used: int = 0
    _task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.limit != _UNLIMITED

    def admits(self, cost: int) -> bool:
        """Whether a request of this cost may go on (the hot path: a sum, a
        comparison and, for writes, the alarm's flag). An admitted cost is
        counted as written until the next measure."""
        if self.used + cost >= self.limit or (cost and self.alarms.nospace):
            return False
        self.used += cost
        return True

    async def refuse(self, cost: int) -> None:
        """Fail a request admits() refused, raising the NOSPACE alarm first
        when it was the quota (not an alarm already raised) that refused."""
        if self.used + cost >= self.limit:
            await self.alarms.activate(self.member_id, NOSPACE)
        raise errors.ErrNoSpace

    async def remeasure(self) -> None:
        if self.measure is not None:
            self.used = await asyncio.to_thread(self.measure)

    async def start(self) -> None:
        if not self.enabled:
            log.info("backend quota disabled")
            return
        if self.measure is None:
            log.info("the engine cannot tell its size on disk: the backend quota is not enforced")
            self.limit = _UNLIMITED
            return
        await self.remeasure()
        self.alarms.on_nospace_cleared.append(self.remeasure)
        if self.limit > MAX_QUOTA_BYTES:
            log.warning("backend quota %d exceeds etcd's maximum recommended quota %d", self.limit, MAX_QUOTA_BYTES)
        log.info("backend quota %d bytes; %d in use", self.limit, self.used)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="quota-measure")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.measure_interval)
            try:
                await self.remeasure()
            except OSError as e:  # e.g. the data directory vanished: keep the last figure
                log.warning("measuring the database size failed: %s", e)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
