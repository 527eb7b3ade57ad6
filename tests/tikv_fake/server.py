"""The fake's two gRPC services: PD (members, timestamps, the one region and
its store) and TiKV (transactional KV), served from one asyncio process.

One event loop serves both ports and runs every request to completion
without suspending in between, so requests are applied one at a time, in
the order they arrive, as TiKV's latches order commands on one key. A Tso
stream costs no thread (tikv-client keeps one open per client).

The cluster shape is the smallest tikv-client accepts: one PD member whose
client URL is the bound address (the client reconnects to what GetMembers
says), one store whose address has no scheme, and one region over the whole
key space (an empty start and end key) led by that store's peer.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import AsyncIterator

import grpc

from .mvcc import MAX_TS, MvccStore, TxnError
from .pb import kvrpcpb_pb2 as kvrpcpb
from .pb import metapb_pb2 as metapb
from .pb import pdpb_pb2 as pdpb
from .pb import pdpb_pb2_grpc as pdpb_grpc
from .pb import tikvpb_pb2_grpc as tikvpb_grpc
from .tso import Oracle, physical_of

log = logging.getLogger("tikv_fake")

CLUSTER_ID = 0x6272_6169_6E  # any non-zero id; the client echoes it back
MEMBER_ID, STORE_ID, REGION_ID, PEER_ID = 1, 1, 2, 3
TSO_LIMIT = "tso_limit"


@dataclass
class Cluster:
    """What both services share: the store, the oracle and the addresses."""

    store: MvccStore
    pd_address: str
    tikv_address: str
    calls: Counter[str] = field(default_factory=Counter)
    # a KvCommit naming one of these keys never answers and applies nothing:
    # tests kill a client there, in the middle of its commit
    stall_commit_keys: frozenset[bytes] = frozenset()
    # answer GetMembers and GetStore with the caller's own loopback address
    # (and the fake's ports): a test gives one client a proxy of its own on
    # another loopback address, which the client then keeps using, and cuts
    # that client off by cutting the proxy
    advertise_caller_host: bool = False
    # the process exits (as if SIGKILLed) when the first KvCommit of a
    # transaction that prewrote a key containing this arrives, before it is
    # applied or answered: tests of a commit whose outcome the client cannot know
    die_on_commit_of: bytes = b""
    doomed: set[int] = field(default_factory=set)
    oracle: Oracle = field(init=False)

    def __post_init__(self) -> None:
        # start above both the saved bound and anything stored (a data file
        # written by a run that died before saving its bound)
        floor = max(self.store.meta(TSO_LIMIT), physical_of(self.store.max_ts()))
        self.oracle = Oracle(floor, lambda limit: self.store.set_meta(TSO_LIMIT, limit))

    def called(self, method: str) -> None:
        self.calls[method] += 1
        log.debug("rpc %s", method)

    def addresses(self, peer: str) -> tuple[str, str]:
        """The PD and TiKV addresses to give the caller at peer (gRPC's
        "ipv4:HOST:PORT")."""
        if self.advertise_caller_host and peer.startswith("ipv4:127."):
            host = peer.split(":")[1]
            return (f"{host}:{self.pd_address.rsplit(':', 1)[1]}", f"{host}:{self.tikv_address.rsplit(':', 1)[1]}")
        return self.pd_address, self.tikv_address

    def header(self) -> pdpb.ResponseHeader:
        return pdpb.ResponseHeader(cluster_id=CLUSTER_ID)

    def region(self) -> metapb.Region:
        return metapb.Region(
            id=REGION_ID, start_key=b"", end_key=b"", region_epoch=metapb.RegionEpoch(conf_ver=1, version=1),
            peers=[self.leader()],
        )

    def leader(self) -> metapb.Peer:
        return metapb.Peer(id=PEER_ID, store_id=STORE_ID)


class PdService(pdpb_grpc.PDServicer):
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def GetMembers(self, request: pdpb.GetMembersRequest, context: grpc.aio.ServicerContext) -> pdpb.GetMembersResponse:
        self.cluster.called("GetMembers")
        pd_address = self.cluster.addresses(context.peer())[0]
        me = pdpb.Member(name="pd-fake", member_id=MEMBER_ID, client_urls=[f"http://{pd_address}"],
                         peer_urls=[f"http://{pd_address}"])
        return pdpb.GetMembersResponse(header=self.cluster.header(), members=[me], leader=me, etcd_leader=me)

    async def Tso(self, requests: AsyncIterator[pdpb.TsoRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[pdpb.TsoResponse]:
        self.cluster.called("Tso")
        async for request in requests:
            physical, logical = self.cluster.oracle.next_batch(request.count)
            yield pdpb.TsoResponse(header=self.cluster.header(), count=request.count,
                                   timestamp=pdpb.Timestamp(physical=physical, logical=logical))

    async def GetRegion(self, request: pdpb.GetRegionRequest, context: grpc.aio.ServicerContext) -> pdpb.GetRegionResponse:
        self.cluster.called("GetRegion")
        return pdpb.GetRegionResponse(header=self.cluster.header(), region=self.cluster.region(), leader=self.cluster.leader())

    async def GetRegionByID(self, request: pdpb.GetRegionByIDRequest, context: grpc.aio.ServicerContext) -> pdpb.GetRegionResponse:
        self.cluster.called("GetRegionByID")
        if request.region_id != REGION_ID:
            return pdpb.GetRegionResponse(header=self.cluster.header())  # no region: the client looks again
        return pdpb.GetRegionResponse(header=self.cluster.header(), region=self.cluster.region(), leader=self.cluster.leader())

    async def GetStore(self, request: pdpb.GetStoreRequest, context: grpc.aio.ServicerContext) -> pdpb.GetStoreResponse:
        self.cluster.called("GetStore")
        if request.store_id != STORE_ID:
            error = pdpb.Error(type=pdpb.UNKNOWN, message=f"invalid store ID {request.store_id}, not found")
            return pdpb.GetStoreResponse(header=pdpb.ResponseHeader(cluster_id=CLUSTER_ID, error=error))
        store = metapb.Store(id=STORE_ID, address=self.cluster.addresses(context.peer())[1], state=metapb.Up, version="6.5.0")
        return pdpb.GetStoreResponse(header=self.cluster.header(), store=store)


def _read_ts(version: int) -> int:
    return min(version, MAX_TS)


class TikvService(tikvpb_grpc.TikvServicer):
    """TiKV's transactional commands: each answered from MvccStore, its
    KeyErrors placed where TiKV places them in each response."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store

    def _region_error(self, ctx: kvrpcpb.Context) -> str | None:
        if ctx.region_id != REGION_ID:
            return f"region {ctx.region_id} not found"
        return None

    async def KvGet(self, request: kvrpcpb.GetRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.GetResponse:
        self.cluster.called("KvGet")
        out = kvrpcpb.GetResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        try:
            value = self.store.get(request.key, _read_ts(request.version))
        except TxnError as e:
            out.error.CopyFrom(e.error)
            return out
        if value is None:
            out.not_found = True
        else:
            out.value = value
        return out

    async def KvBatchGet(self, request: kvrpcpb.BatchGetRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.BatchGetResponse:
        self.cluster.called("KvBatchGet")
        out = kvrpcpb.BatchGetResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        for key in request.keys:
            try:
                value = self.store.get(key, _read_ts(request.version))
            except TxnError as e:
                out.pairs.add(key=key, error=e.error)  # TiKV reports a lock met per key
                continue
            if value is not None:
                out.pairs.add(key=key, value=value)
        return out

    async def KvScan(self, request: kvrpcpb.ScanRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.ScanResponse:
        self.cluster.called("KvScan")
        out = kvrpcpb.ScanResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        if request.reverse:
            out.error.abort = "the fake does not scan in reverse"
            return out
        for key, value, error in self.store.scan(request.start_key, request.end_key, request.limit, _read_ts(request.version)):
            if error is not None:
                out.pairs.add(key=key, error=error.error)
            elif request.key_only:
                out.pairs.add(key=key)
            else:
                out.pairs.add(key=key, value=value)
        return out

    async def KvPrewrite(self, request: kvrpcpb.PrewriteRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.PrewriteResponse:
        self.cluster.called("KvPrewrite")
        out = kvrpcpb.PrewriteResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        if request.use_async_commit or request.try_one_pc:
            # brain's client leaves both off; a fake that accepted them
            # without their rules would pass what TiKV would not
            out.errors.add(abort="the fake supports neither async commit nor 1PC")
            return out
        if self.cluster.die_on_commit_of and any(self.cluster.die_on_commit_of in m.key for m in request.mutations):
            self.cluster.doomed.add(request.start_version)
        # tikv-client sends txn_size u64::MAX ("unknown"); sqlite keeps signed 64-bit
        errors = self.store.prewrite(request.mutations, request.primary_lock, request.start_version, request.lock_ttl,
                                     min(request.txn_size, MAX_TS), request.min_commit_ts)
        out.errors.extend(errors)
        log.debug("prewrite of %d, %d keys: %s", request.start_version, len(request.mutations),
                  "; ".join(str(e).replace("\n", " ") for e in errors) or "ok")
        return out

    async def KvCommit(self, request: kvrpcpb.CommitRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.CommitResponse:
        self.cluster.called("KvCommit")
        if request.start_version in self.cluster.doomed:
            log.warning("exiting at the commit of %d, as --die-on-commit-of asks", request.start_version)
            os._exit(137)
        if self.cluster.stall_commit_keys.intersection(request.keys):
            log.debug("stalled KvCommit of %s", list(request.keys))
            await asyncio.Event().wait()  # until the client goes away
        out = kvrpcpb.CommitResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        try:
            self.store.commit(request.keys, request.start_version, request.commit_version)
            out.commit_version = request.commit_version
        except TxnError as e:
            out.error.CopyFrom(e.error)
        log.debug("commit of %d at %d, %d keys: %s", request.start_version, request.commit_version, len(request.keys),
                  str(out.error).replace("\n", " ") or "ok")
        return out

    async def KvBatchRollback(self, request: kvrpcpb.BatchRollbackRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.BatchRollbackResponse:
        self.cluster.called("KvBatchRollback")
        out = kvrpcpb.BatchRollbackResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        try:
            self.store.rollback(request.keys, request.start_version)
        except TxnError as e:
            out.error.CopyFrom(e.error)
        return out

    async def KvCleanup(self, request: kvrpcpb.CleanupRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.CleanupResponse:
        self.cluster.called("KvCleanup")
        out = kvrpcpb.CleanupResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        log.debug("cleanup of %d on %r at current_ts %d", request.start_version, request.key, request.current_ts)
        try:
            out.commit_version = self.store.cleanup(request.key, request.start_version, request.current_ts)
        except TxnError as e:
            out.error.CopyFrom(e.error)
        return out

    async def KvCheckTxnStatus(self, request: kvrpcpb.CheckTxnStatusRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.CheckTxnStatusResponse:
        self.cluster.called("KvCheckTxnStatus")
        if (msg := self._region_error(request.context)) is not None:
            out = kvrpcpb.CheckTxnStatusResponse()
            out.region_error.message = msg
            return out
        try:
            return self.store.txn_status(request.primary_key, request.lock_ts, request.current_ts,
                                         request.rollback_if_not_exist, request.caller_start_ts)
        except TxnError as e:
            return kvrpcpb.CheckTxnStatusResponse(error=e.error)

    async def KvResolveLock(self, request: kvrpcpb.ResolveLockRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.ResolveLockResponse:
        self.cluster.called("KvResolveLock")
        out = kvrpcpb.ResolveLockResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        try:
            if request.txn_infos:
                for info in request.txn_infos:
                    self.store.resolve(info.txn, info.status, [])
            else:
                self.store.resolve(request.start_version, request.commit_version, request.keys)
        except TxnError as e:
            out.error.CopyFrom(e.error)
        return out

    async def KvTxnHeartBeat(self, request: kvrpcpb.TxnHeartBeatRequest, context: grpc.aio.ServicerContext) -> kvrpcpb.TxnHeartBeatResponse:
        self.cluster.called("KvTxnHeartBeat")
        out = kvrpcpb.TxnHeartBeatResponse()
        if (msg := self._region_error(request.context)) is not None:
            out.region_error.message = msg
            return out
        log.debug("heartbeat of %d advises a TTL of %d ms", request.start_version, request.advise_lock_ttl)
        try:
            out.lock_ttl = self.store.heartbeat(request.primary_lock, request.start_version, request.advise_lock_ttl)
        except TxnError as e:
            out.error.CopyFrom(e.error)
        return out


async def serve(data: str, host: str, pd_port: int, tikv_port: int, stall_commit_keys: frozenset[bytes] = frozenset(),
                advertise_caller_host: bool = False, die_on_commit_of: bytes = b"") -> tuple[list[grpc.aio.Server], Cluster]:
    """Bind both ports (0: any free port) and start serving: PD on one,
    TiKV on the other, each a server of its own as in a real cluster."""
    pd_server, tikv_server = grpc.aio.server(), grpc.aio.server()
    pd_bound = pd_server.add_insecure_port(f"{host}:{pd_port}")
    tikv_bound = tikv_server.add_insecure_port(f"{host}:{tikv_port}")
    cluster = Cluster(MvccStore(data), f"{host}:{pd_bound}", f"{host}:{tikv_bound}", stall_commit_keys=stall_commit_keys,
                      advertise_caller_host=advertise_caller_host, die_on_commit_of=die_on_commit_of)
    pdpb_grpc.add_PDServicer_to_server(PdService(cluster), pd_server)
    tikvpb_grpc.add_TikvServicer_to_server(TikvService(cluster), tikv_server)
    await pd_server.start()
    await tikv_server.start()
    return [pd_server, tikv_server], cluster
