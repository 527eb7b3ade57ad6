"""The Python client's requests, one class per closed-loop workload, sent the
way kube-apiserver's etcd3 storage sends them (k8s.io/apiserver
pkg/storage/etcd3/store.go): create is `If(ModRevision(key) == 0).Then(Put)`,
update is `If(ModRevision(key) == rev).Then(Put).Else(Get)`, a single get is
a linearizable Range with limit 1, and a list is paged with limit 500, the
pages after the first pinned to the first page's revision."""
from __future__ import annotations

import asyncio

import grpc

from bench import keys
from bench.job import RPC_TIMEOUT_S, ChildJob
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc

_MOD = rpc_pb2.Compare.CompareTarget.MOD
_EQUAL = rpc_pb2.Compare.CompareResult.EQUAL


class CheckFailed(Exception):
    """A response that is not what the request must produce (counted as an error)."""


class Op:
    """One closed-loop workload in one client process. `call(slot, i)` is one
    counted operation by in-flight slot `slot`, its `i`-th."""

    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel]) -> None:
        self.job = job
        self.value = b"x" * job.settings.value_size
        self.kv = [rpc_pb2_grpc.KVStub(ch) for ch in channels]

    def stub(self, slot: int) -> rpc_pb2_grpc.KVStub:
        return self.kv[slot % len(self.kv)]

    async def prepare(self) -> None:
        """Untimed: connect, create what the loop needs, warm up."""

    async def call(self, slot: int, i: int) -> None:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Untimed: remove what only this process knows of (see keys.py for the rest)."""


class Create(Op):
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(job, channels)
        self.prefix = keys.run_prefix("create", job.tag) + f"{job.index}/".encode()

    async def prepare(self) -> None:
        await _warm_up(self.kv)

    async def call(self, slot: int, i: int) -> None:
        key = self.prefix + f"{slot}-{i}".encode()
        r = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(target=_MOD, result=_EQUAL, key=key, mod_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=self.value))],
        )
        resp = await self.stub(slot).Txn(r, timeout=RPC_TIMEOUT_S)
        if not resp.succeeded:
            raise CheckFailed("create: key already existed")


class Update(Op):
    """Each in-flight slot updates its own key, as kube's controllers update
    distinct objects, so that a compare fails only if the server is wrong."""

    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(job, channels)
        self.prefix = keys.run_prefix("update", job.tag) + f"{job.index}/".encode()
        self.revs = [0] * job.slots

    def key(self, slot: int) -> bytes:
        return self.prefix + str(slot).encode()

    async def prepare(self) -> None:
        async def put(slot: int) -> None:
            resp = await self.stub(slot).Put(rpc_pb2.PutRequest(key=self.key(slot), value=self.value), timeout=RPC_TIMEOUT_S)
            self.revs[slot] = resp.header.revision

        await asyncio.gather(*(put(s) for s in range(self.job.slots)))

    async def call(self, slot: int, i: int) -> None:
        key = self.key(slot)
        r = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(target=_MOD, result=_EQUAL, key=key, mod_revision=self.revs[slot])],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=self.value))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
        )
        resp = await self.stub(slot).Txn(r, timeout=RPC_TIMEOUT_S)
        if resp.succeeded:
            self.revs[slot] = resp.header.revision
            return
        kvs = resp.responses[0].response_range.kvs
        self.revs[slot] = kvs[0].mod_revision if kvs else 0
        raise CheckFailed("update: compare failed on a key only this client writes")


class Get(Op):
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(job, channels)
        # one request object for every call: the client's cost per call is
        # what limits it, so build nothing per call
        self.request = rpc_pb2.RangeRequest(key=keys.GET_KEY, limit=1)

    async def prepare(self) -> None:
        await _warm_up(self.kv)

    async def call(self, slot: int, i: int) -> None:
        resp = await self.stub(slot).Range(self.request, timeout=RPC_TIMEOUT_S)
        if len(resp.kvs) != 1:
            raise CheckFailed(f"get: {len(resp.kvs)} keys")


class PagedList(Op):
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(job, channels)
        self.end = keys.prefix_end(keys.LIST_PREFIX)
        self.pages = 0

    async def prepare(self) -> None:
        await _warm_up(self.kv)

    async def call(self, slot: int, i: int) -> None:
        s = self.job.settings
        stub = self.stub(slot)
        key, rev, got = keys.LIST_PREFIX, 0, 0
        # bounded: a correct server needs ceil(list_keys / page_size) pages
        for _ in range(s.list_keys // s.page_size + 2):
            resp = await stub.Range(rpc_pb2.RangeRequest(key=key, range_end=self.end, limit=s.page_size, revision=rev), timeout=RPC_TIMEOUT_S)
            self.pages += 1
            if rev == 0:
                rev = resp.header.revision
                if resp.count != s.list_keys:
                    raise CheckFailed(f"list: count {resp.count}, expected {s.list_keys}")
            got += len(resp.kvs)
            if not resp.more or not resp.kvs:
                break
            key = resp.kvs[-1].key + b"\x00"
        if got != s.list_keys:
            raise CheckFailed(f"list: {got} keys over all pages, expected {s.list_keys}")

    def extra(self) -> dict[str, int]:
        return {"pages": self.pages}


class LeaseGrant(Op):
    def __init__(self, job: ChildJob, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(job, channels)
        self.lease = [rpc_pb2_grpc.LeaseStub(ch) for ch in channels]
        self.ids: list[int] = []

    async def prepare(self) -> None:
        resp = await self.lease[0].LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=self.job.settings.lease_ttl), timeout=RPC_TIMEOUT_S)
        self.ids.append(resp.ID)

    async def call(self, slot: int, i: int) -> None:
        stub = self.lease[slot % len(self.lease)]
        resp = await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=self.job.settings.lease_ttl), timeout=RPC_TIMEOUT_S)
        if resp.error:
            raise CheckFailed(f"lease: {resp.error}")
        self.ids.append(resp.ID)

    async def cleanup(self) -> None:
        # revoke what this run granted, a bounded number at a time; leases
        # missed here still expire after their TTL
        sem = asyncio.Semaphore(self.job.slots)

        async def revoke(lease_id: int) -> None:
            async with sem:
                try:
                    await self.lease[lease_id % len(self.lease)].LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=RPC_TIMEOUT_S)
                except grpc.aio.AioRpcError:
                    pass

        await asyncio.gather(*(revoke(i) for i in self.ids))


OPS: dict[str, type[Op]] = {"create": Create, "update": Update, "get": Get, "list": PagedList, "lease": LeaseGrant}


async def _warm_up(stubs: list[rpc_pb2_grpc.KVStub]) -> None:
    """Open every connection before the window, so it does not time the handshake."""
    await asyncio.gather(*(s.Range(rpc_pb2.RangeRequest(key=keys.GET_KEY, limit=1), timeout=RPC_TIMEOUT_S) for s in stubs))
