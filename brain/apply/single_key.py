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

from brain import errors
from brain.apply.range import execute_range
from brain.apply.txn import compare_kv
from brain.etcdpb import kv_pb2, rpc_pb2
from brain.mvcc.txn_write import WriteTxn

_parse_kv = kv_pb2.KeyValue.FromString
_EMPTY_KV = kv_pb2.KeyValue()
_VALUE = rpc_pb2.Compare.VALUE
TxnResponse = rpc_pb2.TxnResponse

# what single_key() finds
NOT_SINGLE = 0
WRITES = 1  # a branch puts or deletes: goes through the writer
READS = 2  # only ranges (or nothing): answered from the committed view


def _op_kind(op: rpc_pb2.RequestOp) -> int:
    """WRITES or READS for an op of the one-key shape, NOT_SINGLE otherwise."""
    which = op.WhichOneof("request")
    if which == "request_put":
        p = op.request_put
        if p.key and not (p.prev_kv or p.ignore_value or p.ignore_lease):
            return WRITES
    elif which == "request_range":
        r = op.request_range
        # only the key set: no revision, limit, sort, filter or end
        if r.key and len(r.ListFields()) == 1:
            return READS
    elif which == "request_delete_range":
        d = op.request_delete_range
        if d.key and not d.range_end and not d.prev_kv:
            return WRITES
    return NOT_SINGLE


def single_key(t: rpc_pb2.TxnRequest) -> int:
    """NOT_SINGLE, WRITES or READS (see above)."""
    if len(t.compare) != 1 or len(t.success) > 1 or len(t.failure) > 1:
        return NOT_SINGLE
    c = t.compare[0]
    if not c.key or c.range_end:
        return NOT_SINGLE
    kind = READS
    for ops in (t.success, t.failure):
        if ops:
            k = _op_kind(ops[0])
            if k == NOT_SINGLE:
                return NOT_SINGLE
            if k == WRITES:
                kind = WRITES
    return kind


async def apply_single_key(txn: WriteTxn, t: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
    """apply_txn for a txn single_key() accepted."""
    c = t.compare[0]
    raw = await txn.get(c.key)
    parsed = None
    if raw is None:
        ok = c.target != _VALUE and compare_kv(c, _EMPTY_KV)
    else:
        parsed = _parse_kv(raw)
        ok = compare_kv(c, parsed)
    resp = TxnResponse(succeeded=ok)
    ops = t.success if ok else t.failure
    if ops:
        op = ops[0]
        which = op.WhichOneof("request")
        if which == "request_put":
            p = op.request_put
            if p.lease and not txn.lease_exists(p.lease):
                raise errors.ErrLeaseNotFound
            # the usual op is on the compared key: its version is at hand
            known = (raw, parsed) if p.key == c.key else None
            rev = await txn.put(p.key, p.value, p.lease, known)
            resp.responses.add().response_put.header.revision = rev
        elif which == "request_delete_range":
            deleted, rev = await txn.delete_range(op.request_delete_range.key, None)
            out = resp.responses.add().response_delete_range
            out.deleted = deleted
            out.header.revision = rev
        else:
            rr = await execute_range(txn, op.request_range, txn.rev())
            resp.responses.add().response_range.CopyFrom(rr)
    resp.header.revision = txn.rev()
    return resp
