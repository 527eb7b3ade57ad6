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
a directory scan, far too much for every write, so a background task
measures it (on a thread), and between two measures the bytes the engine
has written since the last one are added (a counter the engine keeps).

Computing a Txn's cost means walking its ops, which costs more than the
rest of the check; far enough below the quota no Txn the server accepts can
reach it, so there the cost is not computed: a Txn's cost is at most the
largest message the server takes plus the overhead of each of its ops.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field

from brain.tasks import cancel_and_wait
from brain.errors import DomainError
from brain.etcdpb import rpc_pb2
from brain.server.alarms import NOSPACE, AlarmStore
from engines.features import SizedEngine


class NoSpaceError(DomainError):
    """The space quota is used up, or the NOSPACE alarm is raised (etcd's
    ErrNoSpace)."""

    text = "mvcc: database space exceeded"


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
class _Unmeasured:
    """Stands for an engine that cannot tell its size: nothing written."""

    bytes_written: int = 0


@dataclass
class SpaceQuota:
    limit: int
    alarms: AlarmStore
    member_id: int
    # None for an engine that cannot tell its size, whose writes the quota
    # then never refuses
    engine: SizedEngine | None
    # the largest request message the server takes: bounds a Txn's cost
    max_message_bytes: int
    measure_interval: float = DEFAULT_MEASURE_INTERVAL
    measured: int = 0  # the engine's size on disk at the last measure
    written_then: int = 0  # its bytes_written at that measure
    # limit - measured + written_then: a request fits while its cost plus
    # the engine's bytes_written stays below this (one sum, one comparison)
    budget: int = _UNLIMITED
    _written: SizedEngine | _Unmeasured = field(default_factory=_Unmeasured, repr=False)
    _task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.limit != _UNLIMITED

    def size(self) -> int:
        """The database size: the last measure and what was written since."""
        return self.measured + self._written.bytes_written - self.written_then

    def admits(self, cost: int) -> bool:
        """Whether a request of this cost may go on: not when it would take
        the database to the quota, nor when it writes while NOSPACE is up."""
        if cost + self._written.bytes_written >= self.budget:
            return False
        return not (cost and self.alarms.nospace)

    def admits_put(self, p: rpc_pb2.PutRequest) -> bool:
        if KV_OVERHEAD + len(p.key) + len(p.value) + self._written.bytes_written >= self.budget:
            return False
        return not self.alarms.nospace

    def admits_txn(self, t: rpc_pb2.TxnRequest) -> bool:
        if self.alarms.nospace or (
            self._written.bytes_written + self.max_message_bytes + KV_OVERHEAD * (len(t.success) + len(t.failure)) >= self.budget
        ):
            return self.admits(txn_cost(t))
        return True  # far below the quota: no need for the exact cost

    async def refuse(self, cost: int) -> None:
        """Fail a request admits() refused, raising the NOSPACE alarm first
        when it was the quota (not an alarm already raised) that refused."""
        if self.size() + cost >= self.limit:
            await self.alarms.activate(self.member_id, NOSPACE)
        raise NoSpaceError()

    async def refuse_put(self, p: rpc_pb2.PutRequest) -> None:
        await self.refuse(put_cost(p))

    async def refuse_txn(self, t: rpc_pb2.TxnRequest) -> None:
        await self.refuse(txn_cost(t))

    async def remeasure(self) -> None:
        engine = self.engine
        if engine is not None:
            written = engine.bytes_written
            self.measured = await asyncio.to_thread(engine.disk_size)
            self.written_then = written
            self.budget = self.limit - self.measured + written

    async def start(self) -> None:
        if not self.enabled:
            log.info("backend quota disabled")
            self.engine = None  # nothing to measure: size() stays 0
            return
        if self.engine is None:
            log.info("the engine cannot tell its size on disk: the backend quota is not enforced")
            self.limit = _UNLIMITED
            return
        self._written = self.engine
        await self.remeasure()
        self.alarms.on_nospace_cleared.append(self.remeasure)
        if self.limit > MAX_QUOTA_BYTES:
            log.warning("backend quota %d exceeds etcd's maximum recommended quota %d", self.limit, MAX_QUOTA_BYTES)
        log.info("backend quota %d bytes; %d in use", self.limit, self.measured)
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
        await cancel_and_wait(task)
