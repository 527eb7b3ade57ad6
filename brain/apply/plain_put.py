"""A Put without prev_kv, ignore_value or ignore_lease (etcdctl put, and
most clients' puts), answered with bytes: its PutResponse is the header
alone, so it is put together from the server's encoded header instead of
being built and filled as a message. The answer apply_put gives, byte for
byte (tests/test_bulk_puts.py holds the two side by side)."""
from __future__ import annotations

from brain.lease.errors import LeaseNotFoundError
from brain.apply.single_key import ResponseHeaders
from brain.etcdpb import rpc_pb2
from brain.mvcc.kv import TxnWrite
from brain.wire.responses import put_response


def is_plain(p: rpc_pb2.PutRequest) -> bool:
    return not (p.prev_kv or p.ignore_value or p.ignore_lease)


async def apply_plain_put(txn: TxnWrite, p: rpc_pb2.PutRequest, headers: ResponseHeaders) -> bytes:
    if p.lease and not txn.lease_exists(p.lease):
        raise LeaseNotFoundError()
    rev = await txn.put(p.key, p.value, p.lease)
    return put_response(headers.encode(rev))
