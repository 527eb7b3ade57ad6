"""etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact."""
from __future__ import annotations

from typing import Awaitable, Callable

import grpc

from brain.apply.errors import RequestTooLargeError
from brain.apply import validate
from brain.apply.bulk_puts import apply_bulk_puts, bulk_puts
from brain.apply.plain_put import apply_plain_put, is_plain
from brain.apply.range import serialized_range
from brain.apply.single_key import NOT_SINGLE, READS, WRITES, apply_single_key, apply_single_key_reads, single_key
from brain.apply.txn import apply_delete, apply_put, apply_read_txn, apply_txn, is_read_only
from brain.etcdpb import rpc_pb2
from brain.mvcc.kv import KV
from brain.server.header import Header
from brain.server.heap import HeapTrimmer
from brain.server.quota import SpaceQuota
from brain.wire import Pieces
from brain.server.status import generic, unary

# What etcd adds around a request before its size check (the raft request's
# header and framing), so the limit bites at the same request size.
_RAFT_FRAMING_BYTES = 16
# More than a PutRequest's fields add to its key and value (six tags, two
# lengths, a lease) plus that framing.
_PUT_FIELDS_MAX = 64


class KVService:
    def __init__(self, store: KV, header: Header, max_request_bytes: int, max_txn_ops: int, heap: HeapTrimmer | None = None,
                 quota: SpaceQuota | None = None) -> None:
        self.store = store
        self.quota = quota
        self.heap = heap
        self.header = header
        self.max_request_bytes = max_request_bytes
        self.max_txn_ops = max_txn_ops
        # set when several brain processes share the engine (brain/cluster):
        # awaited before a linearizable Range, so that it sees every write
        # acknowledged before it, whichever member acknowledged it
        self.read_barrier: Callable[[], Awaitable[None]] | None = None

    def _check_size(self, r) -> None:
        if r.ByteSize() + _RAFT_FRAMING_BYTES > self.max_request_bytes:
            raise RequestTooLargeError()

    async def range(self, r: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse | bytes | Pieces:
        validate.check_range(r)
        if self.read_barrier is not None and not r.serializable:
            await self.read_barrier()
        view = self.store.view
        header = rpc_pb2.ResponseHeader(revision=view.rev)
        self.header.fill(header)
        # often already serialized (see serialized_range): status.unary's
        # serializer passes bytes through
        resp = await serialized_range(view, r, header)
        if self.heap is not None and type(resp) is not rpc_pb2.RangeResponse:
            self.heap.after_response(resp.size if isinstance(resp, Pieces) else len(resp))  # type: ignore[arg-type]  # bytes here
        return resp

    async def put(self, r: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse | bytes:
        quota = self.quota  # first, as etcd checks it before the request itself
        if quota is not None and not quota.admits_put(r):
            await quota.refuse_put(r)
        validate.check_put(r)
        # a key and value well under the limit need no size computed
        if len(r.key) + len(r.value) + _PUT_FIELDS_MAX > self.max_request_bytes:
            self._check_size(r)
        if is_plain(r):
            header = self.header
            return await self.store.write(lambda txn: apply_plain_put(txn, r, header))
        resp = await self.store.write(lambda txn: apply_put(txn, r))
        self.header.fill(resp.header)
        return resp

    async def delete_range(self, r: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        validate.check_delete(r)
        self._check_size(r)
        resp = await self.store.write(lambda txn: apply_delete(txn, r))
        self.header.fill(resp.header)
        return resp

    async def txn(self, r: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse | bytes:
        quota = self.quota  # every shape, read-only ones too (see quota.py)
        if quota is not None and not quota.admits_txn(r):
            await quota.refuse_txn(r)
        shape = single_key(r) if self.max_txn_ops > 0 else NOT_SINGLE
        if shape is WRITES:
            self._check_size(r)
            header = self.header
            return await self.store.write(lambda txn: apply_single_key(txn, r, header))
        if shape is READS:
            return await apply_single_key_reads(self.store.read_txn(), r, self.header)
        puts = bulk_puts(r, self.max_txn_ops)
        if puts is not None:
            self._check_size(r)
            header = self.header
            return await self.store.write(lambda txn: apply_bulk_puts(txn, puts, header))
        validate.check_txn(r, self.max_txn_ops)
        validate.check_intervals(r.success)
        validate.check_intervals(r.failure)
        if is_read_only(r):
            resp = await apply_read_txn(self.store.read_txn(), r)
        else:
            self._check_size(r)
            resp = await self.store.write(lambda txn: apply_txn(txn, r))
        self.header.fill(resp.header)
        return resp

    async def compact(self, r: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        rev = await self.store.compact(r.revision, r.physical)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = rev
        self.header.fill(resp.header)
        return resp

    def handler(self) -> grpc.GenericRpcHandler:
        pb = rpc_pb2
        return generic(
            "etcdserverpb.KV",
            {
                "Range": unary(self.range, pb.RangeRequest, pb.RangeResponse),
                "Put": unary(self.put, pb.PutRequest, pb.PutResponse),
                "DeleteRange": unary(self.delete_range, pb.DeleteRangeRequest, pb.DeleteRangeResponse),
                "Txn": unary(self.txn, pb.TxnRequest, pb.TxnResponse),
                "Compact": unary(self.compact, pb.CompactionRequest, pb.CompactionResponse),
            },
        )
