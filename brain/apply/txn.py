"""Put, DeleteRange and Txn as etcd applies them, on a TxnWrite; a Txn that
only reads (is_read_only) on a TxnRead, which has nothing to write with.

Txn follows etcd's order exactly: every compare (nested txns included) is
evaluated against the state before the txn; then the chosen branches are
checked (puts' leases and ignore_* preconditions, then ranges' revisions)
before anything is written, so a failing check leaves no half-applied txn; then the ops run in
order, each seeing the writes of the ones before.
"""
from __future__ import annotations

from brain.apply.errors import KeyNotFoundError
from brain.lease.errors import LeaseNotFoundError
from brain.mvcc.errors import CompactedError, FutureRevisionError
from brain.apply.range import execute_range, range_end
from brain.etcdpb import kv_pb2, rpc_pb2
from brain.mvcc.kv import TxnRead, TxnWrite

KeyValue = kv_pb2.KeyValue
_parse_kv = KeyValue.FromString
Compare = rpc_pb2.Compare

_EMPTY_KV = KeyValue()


# -- Put ------------------------------------------------------------------------


async def _check_put(txn: TxnWrite, p: rpc_pb2.PutRequest) -> bytes | None:
    if p.lease and not txn.lease_exists(p.lease):
        raise LeaseNotFoundError()
    prev = None
    if p.ignore_value or p.ignore_lease or p.prev_kv:
        prev = await txn.get(p.key)
        if (p.ignore_value or p.ignore_lease) and prev is None:
            raise KeyNotFoundError()
    return prev


async def _put(txn: TxnWrite, p: rpc_pb2.PutRequest, prev: bytes | None) -> rpc_pb2.PutResponse:
    value, lease = p.value, p.lease
    if p.ignore_value or p.ignore_lease:
        pkv = _parse_kv(prev)  # type: ignore[arg-type]
        if p.ignore_value:
            value = pkv.value
        if p.ignore_lease:
            lease = pkv.lease
    resp = rpc_pb2.PutResponse()
    if p.prev_kv and prev is not None:
        resp.prev_kv.MergeFromString(prev)
    resp.header.revision = await txn.put(p.key, value, lease)
    return resp


async def apply_put(txn: TxnWrite, p: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
    prev = await _check_put(txn, p)
    return await _put(txn, p, prev)


# -- DeleteRange ----------------------------------------------------------------


async def apply_delete(txn: TxnWrite, d: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
    end = range_end(d.range_end)
    resp = rpc_pb2.DeleteRangeResponse()
    if d.prev_kv:
        rr = await txn.range(d.key, end)
        add = resp.prev_kvs.add
        for raw in rr.kvs:
            add().MergeFromString(raw)
    resp.deleted, resp.header.revision = await txn.delete_range(d.key, end)
    return resp


# -- Txn ------------------------------------------------------------------------


def compare_kv(c: Compare, kv: KeyValue) -> bool:
    t = c.target
    which = c.WhichOneof("target_union")
    if t == Compare.VALUE:
        v = c.value if which == "value" else b""
        av = kv.value
        result = (av > v) - (av < v)
    else:
        if t == Compare.CREATE:
            a, b = kv.create_revision, (c.create_revision if which == "create_revision" else 0)
        elif t == Compare.MOD:
            a, b = kv.mod_revision, (c.mod_revision if which == "mod_revision" else 0)
        elif t == Compare.VERSION:
            a, b = kv.version, (c.version if which == "version" else 0)
        elif t == Compare.LEASE:
            a, b = kv.lease, (c.lease if which == "lease" else 0)
        else:
            a = b = 0
        result = (a > b) - (a < b)
    r = c.result
    if r == Compare.EQUAL:
        return result == 0
    if r == Compare.NOT_EQUAL:
        return result != 0
    if r == Compare.GREATER:
        return result > 0
    if r == Compare.LESS:
        return result < 0
    return True


async def _apply_compare(txn: TxnRead, c: Compare) -> bool:
    rr = await txn.range(c.key, range_end(c.range_end))
    if not rr.kvs:
        if c.target == Compare.VALUE:
            return False
        return compare_kv(c, _EMPTY_KV)
    for raw in rr.kvs:
        if not compare_kv(c, _parse_kv(raw)):
            return False
    return True


async def _compare_to_path(txn: TxnRead, t: rpc_pb2.TxnRequest, path: list[bool]) -> None:
    ok = True
    for c in t.compare:
        if not await _apply_compare(txn, c):
            ok = False
            break
    path.append(ok)
    for op in (t.success if ok else t.failure):
        if op.WhichOneof("request") == "request_txn":
            await _compare_to_path(txn, op.request_txn, path)


async def _check_branch(txn: TxnWrite, t: rpc_pb2.TxnRequest, path: list[bool], i: int, kind: str) -> int:
    """Checks one kind of op ("request_put" or "request_range") in the chosen
    branches before any write; returns the next path index."""
    ops = t.success if path[i] else t.failure
    i += 1
    for op in ops:
        which = op.WhichOneof("request")
        if which == "request_txn":
            i = await _check_branch(txn, op.request_txn, path, i, kind)
        elif which != kind:
            continue
        elif which == "request_range":
            _check_range(txn, op.request_range)
        else:
            await _check_put(txn, op.request_put)
    return i


def _check_range(txn: TxnRead, r: rpc_pb2.RangeRequest) -> None:
    rev = r.revision
    if rev != 0:
        if rev > txn.rev():
            raise FutureRevisionError()
        if rev < txn.compact_rev:
            raise CompactedError()


async def _execute(txn: TxnWrite, t: rpc_pb2.TxnRequest, path: list[bool], i: int, resp: rpc_pb2.TxnResponse) -> int:
    ok = path[i]
    i += 1
    resp.succeeded = ok
    for op in (t.success if ok else t.failure):
        which = op.WhichOneof("request")
        out = resp.responses.add()
        if which == "request_range":
            rr = await execute_range(txn, op.request_range, txn.rev())
            out.response_range.CopyFrom(rr)
        elif which == "request_put":
            p = op.request_put
            prev = None
            if p.prev_kv or p.ignore_value or p.ignore_lease:
                prev = await txn.get(p.key)
                if prev is None and (p.ignore_value or p.ignore_lease):
                    raise KeyNotFoundError()
            out.response_put.CopyFrom(await _put(txn, p, prev))
        elif which == "request_delete_range":
            out.response_delete_range.CopyFrom(await apply_delete(txn, op.request_delete_range))
        elif which == "request_txn":
            inner = out.response_txn
            inner.header.SetInParent()  # etcd sends nested txn headers empty
            i = await _execute(txn, op.request_txn, path, i, inner)
    return i


async def apply_txn(txn: TxnWrite, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
    path: list[bool] = []
    await _compare_to_path(txn, t, path)
    # etcd 3.5 checks every put of the chosen branches first, then every range
    await _check_branch(txn, t, path, 0, "request_put")
    await _check_branch(txn, t, path, 0, "request_range")
    resp = rpc_pb2.TxnResponse()
    await _execute(txn, t, path, 0, resp)
    resp.header.revision = txn.rev()
    return resp


async def apply_read_txn(txn: TxnRead, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
    """apply_txn for a txn is_read_only() accepted: its compares, then its
    chosen branch's ranges, all at txn.rev()."""
    ok = True
    for c in t.compare:
        if not await _apply_compare(txn, c):
            ok = False
            break
    ops = t.success if ok else t.failure
    for op in ops:
        _check_range(txn, op.request_range)
    resp = rpc_pb2.TxnResponse(succeeded=ok)
    for op in ops:
        rr = await execute_range(txn, op.request_range, txn.rev())
        resp.responses.add().response_range.CopyFrom(rr)
    resp.header.revision = txn.rev()
    return resp


def is_read_only(t: rpc_pb2.TxnRequest) -> bool:
    """Whether both branches hold ranges only (a nested txn is not)."""
    for op in t.success:
        if op.WhichOneof("request") != "request_range":
            return False
    for op in t.failure:
        if op.WhichOneof("request") != "request_range":
            return False
    return True
