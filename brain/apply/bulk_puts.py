"""Txns that only put: no compare, no else branch, every op a plain Put on
a distinct key (the shape of a restore, a migration or a bulk load).

Such a txn always takes its success branch, and none of etcd's checks can
fail but a put's lease, so the general machinery of txn.py (compare paths,
branch checks, one response message per op) is skipped: the puts are made
in order, and the answer, the same PutResponse for every op, is put
together from bytes. It is the answer apply_txn gives, byte for byte
(tests/test_bulk_puts.py holds the two side by side). Any other shape goes
the general way, so errors stay etcd's.
"""
from __future__ import annotations

from brain.lease.errors import LeaseNotFoundError
from brain.apply.single_key import ResponseHeaders
from brain.etcdpb import rpc_pb2
from brain.mvcc.kv import TxnWrite
from brain.wire.responses import txn_put_op, txn_response

# Below this many ops the general path costs no more.
MIN_OPS = 4


def bulk_puts(t: rpc_pb2.TxnRequest, max_txn_ops: int) -> list[rpc_pb2.PutRequest] | None:
    """The puts of a txn of the bulk shape, None for any other txn."""
    ops = t.success
    if t.compare or t.failure or not MIN_OPS <= len(ops) <= max_txn_ops:
        return None
    puts = []
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            return None
        p = op.request_put
        if not p.key or p.prev_kv or p.ignore_value or p.ignore_lease:
            return None
        puts.append(p)
    if len({p.key for p in puts}) != len(puts):
        return None  # etcd's duplicate-key error comes from the general path
    return puts


async def apply_bulk_puts(txn: TxnWrite, puts: list[rpc_pb2.PutRequest], headers: ResponseHeaders) -> bytes:
    """apply_txn for a txn bulk_puts() accepted, serialized, header included."""
    for lease in {p.lease for p in puts if p.lease}:
        if not txn.lease_exists(lease):
            raise LeaseNotFoundError()
    put = txn.put
    rev = 0
    for p in puts:
        rev = await put(p.key, p.value, p.lease)
    return txn_response(headers.encode(txn.rev()), True, txn_put_op(rev) * len(puts))
