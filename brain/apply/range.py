"""Range: etcd's executeRange (limit+1 for `more`, revision filters, sort,
keys_only, exact count) over any reader with etcd's ReadView shape."""
from __future__ import annotations

import asyncio
from typing import Protocol

from brain.etcdpb import kv_pb2, rpc_pb2
from brain.mvcc.kv import RangeEnd, RawRange
from brain.mvcc.view import drop_in_slices
from brain.wire import LengthPrefixes, Pieces
from brain.wire.tags import RANGE_RESPONSE_KVS

KeyValue = kv_pb2.KeyValue
RangeRequest = rpc_pb2.RangeRequest
RangeResponse = rpc_pb2.RangeResponse
ResponseHeader = rpc_pb2.ResponseHeader

_NONE = RangeRequest.NONE
_ASCEND = RangeRequest.ASCEND
_DESCEND = RangeRequest.DESCEND
_KEY = RangeRequest.KEY
_VERSION = RangeRequest.VERSION
_CREATE = RangeRequest.CREATE
_MOD = RangeRequest.MOD
_VALUE = RangeRequest.VALUE

_SORT_KEYS = {
    _KEY: lambda kv: kv.key,
    _VERSION: lambda kv: kv.version,
    _CREATE: lambda kv: kv.create_revision,
    _MOD: lambda kv: kv.mod_revision,
    _VALUE: lambda kv: kv.value,
}


class Reader(Protocol):
    async def range(
        self, key: bytes, end: RangeEnd, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RawRange: ...


def range_end(range_end: bytes) -> RangeEnd:
    """etcd's encoding: empty = the single key; "\\0" = every key >= key."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


def _default_ordering(target: int, order: int) -> bool:
    return order == _NONE or (target == _KEY and order == _ASCEND)


def _has_filters(r: RangeRequest) -> bool:
    return bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision)


async def _read(reader: Reader, r: RangeRequest, filters: bool) -> RawRange:
    limit = r.limit if _default_ordering(r.sort_target, r.sort_order) and not filters else 0
    if limit > 0:
        limit += 1  # one extra to know whether more remain
    return await reader.range(r.key, range_end(r.range_end), r.revision, limit, r.count_only)


def _in_read_order(r: RangeRequest, filters: bool) -> bool:
    """Whether the response keeps the KeyValues as read: no filter, no
    sorting (etcd sorts by a non-key target even with order NONE)."""
    return not filters and r.sort_target == _KEY and r.sort_order != _DESCEND


_KVS = LengthPrefixes(RANGE_RESPONSE_KVS)
# A range of more KeyValues than this is framed (or parsed) off the event
# loop, and sent in pieces.
LARGE_RANGE = 4096


async def serialized_range(reader: Reader, r: RangeRequest, header: ResponseHeader) -> RangeResponse | bytes | Pieces:
    """The KV service's Range: like execute_range, but where the answer is
    the stored KeyValues as read (a plain list page, kube-apiserver's usual
    request), the serialized RangeResponse is put together from their stored
    bytes, which are already serialized KeyValues: no parse, no re-encoding.
    The bytes are the ones RangeResponse.SerializeToString would give (fields
    in number order: header, kvs, more, count). header is filled in by the
    caller's Header and copied in."""
    filters = _has_filters(r)
    rr = await _read(reader, r, filters)
    large = len(rr.kvs) > LARGE_RANGE
    if not _in_read_order(r, filters) or r.keys_only or r.count_only:
        if large:  # parsed, filtered, sorted and serialized off the event loop
            raw = await asyncio.to_thread(_finish_serialized, rr, r, header, filters)
            await drop_in_slices(rr.kvs)
            return raw
        resp = _finish(rr, r, header.revision, filters)
        resp.header.CopyFrom(header)
        return resp
    kvs = rr.kvs
    more = r.limit > 0 and len(kvs) > r.limit
    if more:
        kvs = kvs[: r.limit]
    head = RangeResponse(header=header).SerializeToString()
    tail = RangeResponse(more=more, count=rr.count).SerializeToString()
    if large:
        # framed on a thread, LARGE_RANGE values per piece
        pieces = await asyncio.to_thread(_KVS.pieces, head, kvs, tail, LARGE_RANGE)
        del kvs
        await drop_in_slices(rr.kvs)
        return pieces
    parts = [head]
    parts += _KVS.frame(kvs)
    parts.append(tail)
    return b"".join(parts)


def _finish_serialized(rr: RawRange, r: RangeRequest, header: ResponseHeader, filters: bool) -> bytes:
    resp = _finish(rr, r, header.revision, filters)
    resp.header.CopyFrom(header)
    return resp.SerializeToString()


async def execute_range(reader: Reader, r: RangeRequest, header_rev: int) -> RangeResponse:
    """header_rev: the revision etcd reports (the reader's current revision)."""
    filters = _has_filters(r)
    return _finish(await _read(reader, r, filters), r, header_rev, filters)


def _finish(rr: RawRange, r: RangeRequest, header_rev: int, filters: bool) -> RangeResponse:
    resp = RangeResponse()
    resp.header.revision = header_rev
    resp.count = rr.count
    kvs = rr.kvs
    plain = _in_read_order(r, filters)
    if plain and not r.keys_only:
        if r.limit > 0 and len(kvs) > r.limit:
            kvs = kvs[: r.limit]
            resp.more = True
        add = resp.kvs.add
        for raw in kvs:
            add().MergeFromString(raw)
        return resp
    parsed = [KeyValue.FromString(raw) for raw in kvs]
    if not plain:
        parsed = _filter_and_sort(parsed, r)
    if r.limit > 0 and len(parsed) > r.limit:
        parsed = parsed[: r.limit]
        resp.more = True
    if r.keys_only:
        for kv in parsed:
            kv.value = b""
    resp.kvs.extend(parsed)
    return resp


def _filter_and_sort(kvs: list, r: RangeRequest) -> list:
    if r.max_mod_revision:
        kvs = [kv for kv in kvs if not kv.mod_revision > r.max_mod_revision]
    if r.min_mod_revision:
        kvs = [kv for kv in kvs if not kv.mod_revision < r.min_mod_revision]
    if r.max_create_revision:
        kvs = [kv for kv in kvs if not kv.create_revision > r.max_create_revision]
    if r.min_create_revision:
        kvs = [kv for kv in kvs if not kv.create_revision < r.min_create_revision]
    order = r.sort_order
    if r.sort_target != _KEY and order == _NONE:
        order = _ASCEND
    if not _default_ordering(r.sort_target, order):
        kvs.sort(key=_SORT_KEYS[r.sort_target], reverse=(order == _DESCEND))
    return kvs
