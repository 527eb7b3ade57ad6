"""etcdserverpb.Lease: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable

import grpc

from brain.lease.errors import LeaseNotFoundError
from brain.etcdpb import rpc_pb2
from brain.lease import Lessor
from brain.server.header import Header
from brain.server.quota import LEASE_OVERHEAD, SpaceQuota
from brain.server.status import bidi_stream, generic, unary
from brain.wire import LengthPrefixes, Pieces
from brain.wire.tags import LEASE_TIME_TO_LIVE_RESPONSE_KEYS

log = logging.getLogger(__name__)

pb = rpc_pb2

_KEYS = LengthPrefixes(LEASE_TIME_TO_LIVE_RESPONSE_KEYS, upto=1 << 10)
# A TimeToLive answer with more keys than this is serialized on a thread, in
# pieces of this many keys.
MANY_KEYS = 4096


class LeaseService:
    def __init__(self, lessor: Lessor, header: Header, quota: SpaceQuota | None = None) -> None:
        self.lessor = lessor
        self.header = header
        self.quota = quota
        # set while the server is a migration's target: no lessor runs
        # before the cut-over, and every lease request gets this error
        self.refused: Callable[[], Exception] | None = None

    def _check(self) -> None:
        if self.refused is not None:
            raise self.refused()

    async def grant(self, r: pb.LeaseGrantRequest) -> pb.LeaseGrantResponse:
        self._check()
        quota = self.quota
        if quota is not None and not quota.admits(LEASE_OVERHEAD):
            await quota.refuse(LEASE_OVERHEAD)
        lease = await self.lessor.grant(r.ID, r.TTL)
        resp = pb.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
        self.header.fill(resp.header)
        return resp

    async def revoke(self, r: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
        self._check()
        resp = pb.LeaseRevokeResponse()
        resp.header.revision = await self.lessor.revoke(r.ID)
        self.header.fill(resp.header)
        return resp

    async def time_to_live(self, r: pb.LeaseTimeToLiveRequest) -> pb.LeaseTimeToLiveResponse | Pieces:
        self._check()
        lessor = self.lessor
        lease = lessor.lookup(r.ID)
        if lease is None:
            # etcd answers an unknown lease with TTL -1, not an error
            resp = pb.LeaseTimeToLiveResponse(ID=r.ID, TTL=-1)
        else:
            resp = pb.LeaseTimeToLiveResponse(ID=r.ID, TTL=lessor.remaining(lease), grantedTTL=lease.ttl)
            if r.keys:
                keys = await lessor.keys(r.ID)
                if len(keys) > MANY_KEYS:
                    # copying the keys into the message and serializing it
                    # would hold the loop for a time in proportion to them
                    self.header.fill(resp.header)
                    return await asyncio.to_thread(_KEYS.pieces, resp.SerializeToString(), keys, b"", MANY_KEYS)
                resp.keys.extend(keys)
        self.header.fill(resp.header)
        return resp

    async def leases(self, r: pb.LeaseLeasesRequest) -> pb.LeaseLeasesResponse:
        self._check()
        resp = pb.LeaseLeasesResponse()
        add = resp.leases.add
        for lease in self.lessor.leases():
            add(ID=lease.id)
        self.header.fill(resp.header)
        return resp

    async def keep_alive(
        self, requests: AsyncIterator[pb.LeaseKeepAliveRequest], context
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        """One answer per request, in order, as etcd: the granted TTL, or 0
        for a lease that does not exist (or expired)."""
        async for req in requests:
            self._check()
            resp = pb.LeaseKeepAliveResponse(ID=req.ID)
            # the header is taken before the renewal, as etcd does, so it never
            # shows a revision above the one the renewal happened at
            self.header.fill(resp.header)
            try:
                resp.TTL = await self.lessor.renew(req.ID)
            except LeaseNotFoundError:
                resp.TTL = 0
            yield resp

    def handler(self) -> grpc.GenericRpcHandler:
        return generic(
            "etcdserverpb.Lease",
            {
                "LeaseGrant": unary(self.grant, pb.LeaseGrantRequest, pb.LeaseGrantResponse),
                "LeaseRevoke": unary(self.revoke, pb.LeaseRevokeRequest, pb.LeaseRevokeResponse),
                "LeaseKeepAlive": bidi_stream(self.keep_alive, pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse),
                "LeaseTimeToLive": unary(self.time_to_live, pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse),
                "LeaseLeases": unary(self.leases, pb.LeaseLeasesRequest, pb.LeaseLeasesResponse),
            },
        )
