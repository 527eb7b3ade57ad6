"""The one-key Txn shapes kube-apiserver sends, applied without the general
machinery of txn.py.

Every Txn kube-apiserver makes touches one key: one compare, at most one op
per branch (create: `MOD == 0` then Put; update and delete: `MOD == rev`
then Put or DeleteRange, else Range). For such a txn no request check can
fail (keys are non-empty, no op is nested, one op cannot duplicate another),
so there is nothing to validate, and with one op per branch there is no
order of ops to keep. That leaves one read for the compare and one write,
which is what this module does; the answer is the one apply_txn gives,
field for field (tests/test_single_key.py holds the two side by side).

Anything else, including a shape that would fail a check, goes the general
way so that errors stay etcd's.
"""
from __future__ import annotations

from enum import Enum
from typing import Protocol

from brain.lease.errors import LeaseNotFoundError
from brain.apply.range import execute_range
from brain.apply.txn import compare_kv
from brain.etcdpb import kv_pb2, rpc_pb2
from brain.mvcc.kv import TxnRead, TxnWrite
from brain.wire import varint
from brain.wire.responses import txn_delete_op, txn_put_op, txn_response
from brain.wire.tags import RANGE_REQUEST_KEY

_parse_kv = kv_pb2.KeyValue.FromString
_EMPTY_KV = kv_pb2.KeyValue()
_VALUE = rpc_pb2.Compare.VALUE
TxnResponse = rpc_pb2.TxnResponse
_KEY_TAG_SIZE = len(RANGE_REQUEST_KEY)


class TxnShape(Enum):
    """What single_key() finds in a Txn."""

    NOT_SINGLE = "not one key"  # any other shape: apply_txn's way
    WRITES = "one key, writes"  # a branch puts or deletes: goes through the writer
    READS = "one key, reads"  # only ranges (or nothing): answered from the committed view


# module names for the members: a global lookup, not an attribute of the class, per check
NOT_SINGLE, WRITES, READS = TxnShape.NOT_SINGLE, TxnShape.WRITES, TxnShape.READS


class ResponseHeaders(Protocol):
    """The server's response headers (brain/server/header.py)."""

    def fill(self, h: rpc_pb2.ResponseHeader) -> None: ...

    def encode(self, revision: int) -> bytes: ...


def _only_key(r: rpc_pb2.RangeRequest) -> bool:
    """Whether a RangeRequest sets its key and nothing else: its encoding is
    then the key field alone (any other field, unknown ones too, adds bytes)."""
    n = len(r.key)
    return n > 0 and r.ByteSize() == _KEY_TAG_SIZE + len(varint(n)) + n


def _op_kind(op: rpc_pb2.RequestOp) -> TxnShape:
    """WRITES or READS for an op of the one-key shape, NOT_SINGLE otherwise."""
    which = op.WhichOneof("request")
    if which == "request_put":
        p = op.request_put
        if p.key and not (p.prev_kv or p.ignore_value or p.ignore_lease):
            return WRITES
    elif which == "request_range":
        # only the key set: no revision, limit, sort, filter or end
        if _only_key(op.request_range):
            return READS
    elif which == "request_delete_range":
        d = op.request_delete_range
        if d.key and not d.range_end and not d.prev_kv:
            return WRITES
    return NOT_SINGLE


def single_key(t: rpc_pb2.TxnRequest) -> TxnShape:
    """The Txn's shape (see TxnShape)."""
    compare = t.compare
    if len(compare) != 1:
        return NOT_SINGLE
    c = compare[0]
    if not c.key or c.range_end:
        return NOT_SINGLE
    kind = READS
    for ops in (t.success, t.failure):
        n = len(ops)
        if n == 1:
            k = _op_kind(ops[0])
            if k is NOT_SINGLE:
                return NOT_SINGLE
            if k is WRITES:
                kind = WRITES
        elif n:
            return NOT_SINGLE
    return kind


async def _compare(txn: TxnRead, c: rpc_pb2.Compare) -> tuple[bytes | None, kv_pb2.KeyValue | None, bool]:
    """The compared key's stored version, its parse (if live), and the compare's outcome."""
    raw = await txn.get(c.key)
    parsed = None
    if raw is None:
        ok = c.target != _VALUE and compare_kv(c, _EMPTY_KV)
    else:
        parsed = _parse_kv(raw)
        ok = compare_kv(c, parsed)
    return raw, parsed, ok


async def _range_answer(txn: TxnRead, ok: bool, r: rpc_pb2.RangeRequest, headers: ResponseHeaders) -> TxnResponse:
    resp = TxnResponse(succeeded=ok)
    rr = await execute_range(txn, r, txn.rev())
    resp.responses.add().response_range.CopyFrom(rr)
    resp.header.revision = txn.rev()
    headers.fill(resp.header)
    return resp


async def apply_single_key(txn: TxnWrite, t: rpc_pb2.TxnRequest, headers: ResponseHeaders) -> TxnResponse | bytes:
    """apply_txn for a txn single_key() accepted, header included. A branch
    with a Range answers as a TxnResponse; otherwise the answer is already
    serialized (the bytes TxnResponse.SerializeToString would give)."""
    c = t.compare[0]
    raw, parsed, ok = await _compare(txn, c)
    ops = t.success if ok else t.failure
    op_field = b""
    if ops:
        op = ops[0]
        which = op.WhichOneof("request")
        if which == "request_put":
            p = op.request_put
            if p.lease and not txn.lease_exists(p.lease):
                raise LeaseNotFoundError()
            # the usual op is on the compared key: its version is at hand
            known = (raw, parsed) if p.key == c.key else None
            rev = await txn.put(p.key, p.value, p.lease, known)
            op_field = txn_put_op(rev)
        elif which == "request_delete_range":
            deleted, rev = await txn.delete_range(op.request_delete_range.key, None)
            op_field = txn_delete_op(rev, deleted)
        else:
            return await _range_answer(txn, ok, op.request_range, headers)
    return txn_response(headers.encode(txn.rev()), ok, op_field)


async def apply_single_key_reads(txn: TxnRead, t: rpc_pb2.TxnRequest, headers: ResponseHeaders) -> TxnResponse | bytes:
    """apply_single_key for a txn single_key() found READS: the same answer,
    on a read-only txn."""
    _, _, ok = await _compare(txn, t.compare[0])
    ops = t.success if ok else t.failure
    if ops:
        return await _range_answer(txn, ok, ops[0].request_range, headers)
    return txn_response(headers.encode(txn.rev()), ok, b"")
