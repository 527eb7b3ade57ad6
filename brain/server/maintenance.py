"""etcdserverpb.Maintenance and etcdserverpb.Cluster for a one-member cluster."""
from __future__ import annotations

from typing import AsyncIterator, Protocol, Sequence

import grpc

from brain.errors import MembershipFixedError
from brain.etcdpb import rpc_pb2
from brain.mvcc.hash import hash_all, hash_kv
from brain.mvcc.kv import KV
from brain.server.alarms import AlarmStore
from brain.server.config import ServerConfig
from brain.server.header import Header
from brain.server.status import generic, server_stream, unary
from brain.snapshot.stream import chunked, snapshot_bytes
from engines.base import Engine
from engines.features import compacting, sized


# bytes of snapshot per message
SNAPSHOT_CHUNK = 256 * 1024


class MemberInfo(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def client_urls(self) -> list[str]: ...


class ClusterView(Protocol):
    """Several brain processes on one engine (brain/cluster.ClusterNode):
    who leads, and who serves."""

    @property
    def leader_id(self) -> int: ...

    @property
    def term(self) -> int: ...

    async def live_members(self) -> Sequence[MemberInfo]: ...

    async def move_leader(self, target: int) -> None: ...


def engine_size(engine: Engine) -> int:
    """Bytes the engine holds on disk; 0 for engines that cannot tell."""
    measured = sized(engine)
    return measured.disk_size() if measured is not None else 0


class MaintenanceService:
    def __init__(self, store: KV, engine: Engine, header: Header, config: ServerConfig, alarms: AlarmStore | None = None,
                 cluster: ClusterView | None = None) -> None:
        self.cluster = cluster
        self.alarms = alarms
        self.store = store
        self.engine = engine
        self.header = header
        self.config = config

    async def status(self, r: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse:
        size = engine_size(self.engine)
        resp = rpc_pb2.StatusResponse(
            version=self.config.version,
            dbSize=size,
            dbSizeInUse=size,
            leader=self.header.member_id,
            raftIndex=self.store.rev,
            raftTerm=self.header.raft_term,
            raftAppliedIndex=self.store.rev,
            isLearner=False,
        )
        if self.cluster is not None:
            resp.leader = self.cluster.leader_id  # 0 while none is known, as etcd's
            resp.raftTerm = self.cluster.term
        if self.alarms is not None:
            resp.errors.extend(self.alarms.status_errors())  # as etcd: one entry per active alarm
        self.header.fill(resp.header)
        return resp

    async def alarm(self, r: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = await self.alarms.answer(r) if self.alarms is not None else rpc_pb2.AlarmResponse()
        self.header.fill(resp.header)
        return resp

    async def defragment(self, r: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        engine = compacting(self.engine)
        if engine is not None:
            await engine.compact_range()
        resp = rpc_pb2.DefragmentResponse()
        self.header.fill(resp.header)
        return resp

    async def snapshot(self, r: rpc_pb2.SnapshotRequest) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """brain's snapshot file (brain/snapshot/format.py), streamed as etcd
        streams its own: chunks of the file, whose last 32 bytes are its
        sha256. remaining_bytes counts down from the engine's size on disk,
        an estimate, and is 0 on the last message only."""
        estimate = engine_size(self.engine)
        sent = 0
        pending: bytes | None = None
        async for chunk in chunked(snapshot_bytes(self.engine, self.config.version), SNAPSHOT_CHUNK):
            if pending is not None:
                sent += len(pending)
                yield rpc_pb2.SnapshotResponse(remaining_bytes=max(estimate - sent, 1), blob=pending)
            pending = chunk
        yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=pending or b"")

    async def hash(self, r: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
        crc, rev = await hash_all(self.engine)
        resp = rpc_pb2.HashResponse(hash=crc)
        resp.header.revision = rev  # the revision hashed, not one committed meanwhile
        self.header.fill(resp.header)
        return resp

    async def hash_kv(self, r: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        view = self.store.view
        got = await hash_kv(view, r.revision)
        # etcd reports -1 for a store that was never compacted
        resp = rpc_pb2.HashKVResponse(hash=got.hash, compact_revision=got.compact_revision or -1)
        resp.header.revision = view.rev
        self.header.fill(resp.header)
        return resp

    async def move_leader(self, r: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        assert self.cluster is not None
        await self.cluster.move_leader(r.targetID)
        resp = rpc_pb2.MoveLeaderResponse()
        self.header.fill(resp.header)
        return resp

    def handler(self) -> grpc.GenericRpcHandler:
        pb = rpc_pb2
        methods = {} if self.cluster is None else {  # a single member has nobody to move to
            "MoveLeader": unary(self.move_leader, pb.MoveLeaderRequest, pb.MoveLeaderResponse),
        }
        return generic(
            "etcdserverpb.Maintenance",
            {
                **methods,
                "Status": unary(self.status, pb.StatusRequest, pb.StatusResponse),
                "Alarm": unary(self.alarm, pb.AlarmRequest, pb.AlarmResponse),
                "Defragment": unary(self.defragment, pb.DefragmentRequest, pb.DefragmentResponse),
                "Snapshot": server_stream(self.snapshot, pb.SnapshotRequest, pb.SnapshotResponse),
                "Hash": unary(self.hash, pb.HashRequest, pb.HashResponse),
                "HashKV": unary(self.hash_kv, pb.HashKVRequest, pb.HashKVResponse),
            },
        )


class ClusterService:
    def __init__(self, header: Header, config: ServerConfig, cluster: ClusterView | None = None) -> None:
        self.header = header
        self.config = config
        self.cluster = cluster

    def _member(self) -> rpc_pb2.Member:
        return rpc_pb2.Member(
            ID=self.header.member_id,
            name=self.config.name,
            peerURLs=[],
            clientURLs=self.config.client_urls(),
        )

    async def member_list(self, r: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        if self.cluster is not None:
            members = [rpc_pb2.Member(ID=m.id, name=m.name, peerURLs=[], clientURLs=m.client_urls)
                       for m in await self.cluster.live_members()]
        else:
            members = [self._member()]
        resp = rpc_pb2.MemberListResponse(members=members)
        self.header.fill_without_revision(resp.header)  # as etcd: membership has no revision
        return resp

    async def _refuse(self, r):
        # membership is fixed: brain scales through its engine, not raft members
        raise MembershipFixedError()

    def handler(self) -> grpc.GenericRpcHandler:
        pb = rpc_pb2
        return generic(
            "etcdserverpb.Cluster",
            {
                "MemberList": unary(self.member_list, pb.MemberListRequest, pb.MemberListResponse),
                "MemberAdd": unary(self._refuse, pb.MemberAddRequest, pb.MemberAddResponse),
                "MemberRemove": unary(self._refuse, pb.MemberRemoveRequest, pb.MemberRemoveResponse),
                "MemberUpdate": unary(self._refuse, pb.MemberUpdateRequest, pb.MemberUpdateResponse),
                "MemberPromote": unary(self._refuse, pb.MemberPromoteRequest, pb.MemberPromoteResponse),
            },
        )
