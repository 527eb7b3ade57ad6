"""Reading a running etcd (or any etcd-compatible endpoint) for a migration:
its compact revision, its keys at a revision, its leases, and its changes
from a revision on."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator

import grpc

from brain.client import Endpoint
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.migrate.importer import Event, MigrationError

ALL = b"\x00"  # key and range_end of the whole key space
PAGE = 1000


@dataclass
class WatchBatch:
    """The source's revisions in one watch response, and its revision then."""

    revisions: list[tuple[int, list[Event]]]
    source_rev: int


class EtcdSource:
    def __init__(self, endpoint: Endpoint) -> None:
        self.channel = endpoint.aio_channel()
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.watcher = rpc_pb2_grpc.WatchStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def header(self) -> rpc_pb2.ResponseHeader:
        resp = await self.kv.Range(rpc_pb2.RangeRequest(key=ALL, range_end=ALL, count_only=True), timeout=30)
        return resp.header

    async def compact_revision(self) -> int:
        """etcd says its compact revision to a watch that starts below it
        (after confirming the watch's creation); a watch from revision 1 that
        gets events instead means nothing was ever compacted (0)."""
        if (await self.header()).revision <= 1:
            return 0  # nothing written: nothing compacted, and no event would come
        requests: asyncio.Queue = asyncio.Queue()
        await requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=ALL, range_end=ALL, start_revision=1)))

        async def send() -> AsyncIterator[rpc_pb2.WatchRequest]:
            while True:
                yield await requests.get()

        call = self.watcher.Watch(send())
        try:
            async for resp in call:
                if resp.compact_revision:
                    return int(resp.compact_revision)
                if resp.events:
                    return 0
        finally:
            call.cancel()
        raise MigrationError("the source closed its watch stream")

    async def keys_at(self, rev: int, page: int = PAGE) -> AsyncIterator[list]:
        """Every key live at rev, a page at a time, in key order."""
        start = ALL
        while True:
            resp = await self.kv.Range(rpc_pb2.RangeRequest(key=start, range_end=ALL, revision=rev, limit=page), timeout=120)
            if resp.kvs:
                yield list(resp.kvs)
            if not resp.more:
                return
            start = resp.kvs[-1].key + b"\x00"

    async def leases(self) -> dict[int, int]:
        """Every lease: id -> its remaining TTL (at least 1 s)."""
        out: dict[int, int] = {}
        listed = await self.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=30)
        for lease in listed.leases:
            try:
                ttl = await self.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease.ID), timeout=30)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # expired since it was listed
                raise
            if ttl.TTL > 0:
                out[lease.ID] = max(int(ttl.TTL), 1)
        return out

    async def changes(self, from_rev: int) -> AsyncIterator[WatchBatch]:
        """Every change at from_rev and after, revision by revision (etcd
        never splits one revision's events across watch responses)."""
        create = rpc_pb2.WatchCreateRequest(key=ALL, range_end=ALL, start_revision=from_rev, progress_notify=True)
        never = asyncio.Event()

        async def send() -> AsyncIterator[rpc_pb2.WatchRequest]:
            yield rpc_pb2.WatchRequest(create_request=create)
            await never.wait()  # keep the request side open

        call = self.watcher.Watch(send())
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise MigrationError(
                        f"the source compacted revision {resp.compact_revision} before this migration read revision {from_rev}: "
                        "start again in a new directory")
                if resp.canceled:
                    raise MigrationError(f"the source canceled the watch: {resp.cancel_reason}")
                revisions: list[tuple[int, list[Event]]] = []
                for ev in resp.events:
                    rev = ev.kv.mod_revision
                    if not revisions or revisions[-1][0] != rev:
                        revisions.append((rev, []))
                    deleted = ev.type == ev.DELETE
                    revisions[-1][1].append(Event(ev.kv.key, None if deleted else ev.kv))
                yield WatchBatch(revisions, resp.header.revision)
        finally:
            call.cancel()
        raise MigrationError("the source closed its watch stream")
