"""A running brain as a migration's target: the records go to its
brainpb.Migration service (brain/server/migration.py), which applies them
through its store's writer, so its watchers see them as they arrive.

Requests are bounded in bytes (REQUEST_BYTES, under brain's default gRPC
receive limit of --max-request-bytes plus 512 KiB): a page of keys or a
watch response is split over as many requests as it takes, one revision
over several if it must (the target holds a revision's parts until its
last, up to its own bound). A single key larger than that is sent alone:
the target's --max-request-bytes must be at least the source's."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Sequence

import grpc

from brain.client import Endpoint
from brain.etcdpb import kv_pb2, migration_pb2 as mpb, migration_pb2_grpc
from brain.migrate.importer import Event, MigrationError

REQUEST_BYTES = 1024 * 1024
LEASES_PER_REQUEST = 20_000
# protobuf's framing of one repeated item, at most
_ITEM_OVERHEAD = 16
_PUT, _DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


class BrainTarget:
    def __init__(self, endpoint: Endpoint, timeout: float = 120.0) -> None:
        self.channel = endpoint.aio_channel()
        self.stub = migration_pb2_grpc.MigrationStub(self.channel)
        self.timeout = timeout
        self.rev = 1
        self.compact_rev = 0

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                raise MigrationError(f"the target refused: {e.details()}") from None
            raise

    async def open(self, source_id: int) -> bool:
        resp = await self._call(self.stub.Open, mpb.OpenRequest(source_cluster_id=source_id))
        if resp.resumed:
            self.rev, self.compact_rev = resp.revision, resp.compact_revision
        return bool(resp.resumed)

    async def begin(self, source_id: int, compact_rev: int) -> None:
        await self._call(self.stub.Begin, mpb.BeginRequest(source_cluster_id=source_id, compact_revision=compact_rev))
        self.compact_rev = compact_rev

    async def base(self, kvs: Iterable[kv_pb2.KeyValue]) -> int:
        count = 0
        req, size = mpb.BaseRequest(), 0
        for kv in kvs:
            n = kv.ByteSize() + _ITEM_OVERHEAD
            if size and size + n > REQUEST_BYTES:
                count += (await self._call(self.stub.Base, req)).count
                req, size = mpb.BaseRequest(), 0
            req.kvs.append(kv)
            size += n
        if size:
            count += (await self._call(self.stub.Base, req)).count
        return count

    async def finish_base(self) -> None:
        resp = await self._call(self.stub.Base, mpb.BaseRequest(last=True))
        self.rev = resp.revision

    async def revisions(self, revisions: Sequence[tuple[int, list[Event]]]) -> None:
        req, size = mpb.ApplyRequest(), 0
        for rev, events in revisions:
            part = req.revisions.add(revision=rev)
            for event in events:
                ev = (kv_pb2.Event(type=_DELETE, kv=kv_pb2.KeyValue(key=event.key, mod_revision=rev))
                      if event.kv is None else kv_pb2.Event(type=_PUT, kv=event.kv))
                n = ev.ByteSize() + _ITEM_OVERHEAD
                if size and size + n > REQUEST_BYTES:
                    if part.events:
                        part.continued = True
                    else:
                        del req.revisions[-1]
                    await self._apply(req)
                    req, size = mpb.ApplyRequest(), 0
                    part = req.revisions.add(revision=rev)
                part.events.append(ev)
                size += n
            size += _ITEM_OVERHEAD
        if req.revisions:
            await self._apply(req)

    async def _apply(self, req: mpb.ApplyRequest) -> None:
        resp = await self._call(self.stub.Apply, req)
        self.rev = resp.revision

    async def leases(self, ttls: dict[int, int]) -> None:
        items = list(ttls.items())
        pages = [items[i:i + LEASES_PER_REQUEST] for i in range(0, len(items), LEASES_PER_REQUEST)] or [[]]
        for i, page in enumerate(pages):
            req = mpb.LeasesRequest(first=i == 0, last=i == len(pages) - 1)
            for lease_id, ttl in page:
                req.leases.add(ID=lease_id, TTL=ttl)
            await self._call(self.stub.Leases, req)

    async def flush(self) -> None:
        """Every request is answered once durable on the target."""

    async def cut_over(self) -> int:
        """The target takes client writes from now on; its revision."""
        return (await self._call(self.stub.CutOver, mpb.CutOverRequest())).revision

    async def close(self) -> None:
        await self.channel.close()
