"""Responses put together from bytes: the serialized ResponseHeader, and the
answers of a plain Put and of the Txns the apply layer's short paths take
(brain/apply/plain_put.py, single_key.py, bulk_puts.py). Each gives the bytes
SerializeToString gives for the message apply_put or apply_txn builds (fields
in number order, proto3 defaults left out)."""
from __future__ import annotations

from brain.wire import bytes_field, varint
from brain.wire.tags import (
    DELETE_RANGE_RESPONSE_DELETED,
    DELETE_RANGE_RESPONSE_HEADER,
    PUT_RESPONSE_HEADER,
    RESPONSE_HEADER_CLUSTER_ID,
    RESPONSE_HEADER_MEMBER_ID,
    RESPONSE_HEADER_RAFT_TERM,
    RESPONSE_HEADER_REVISION,
    RESPONSE_OP_RESPONSE_DELETE_RANGE,
    RESPONSE_OP_RESPONSE_PUT,
    TXN_RESPONSE_HEADER,
    TXN_RESPONSE_RESPONSES,
    TXN_RESPONSE_SUCCEEDED_TRUE,
)


def response_header_around_revision(cluster_id: int, member_id: int, raft_term: int) -> tuple[bytes, bytes]:
    """A serialized ResponseHeader is `before + varint(revision) + after`
    for a revision > 0: the two fixed parts, for a server to keep."""
    before = RESPONSE_HEADER_CLUSTER_ID + varint(cluster_id) + RESPONSE_HEADER_MEMBER_ID + varint(member_id) + RESPONSE_HEADER_REVISION
    return before, RESPONSE_HEADER_RAFT_TERM + varint(raft_term)


def put_response(header: bytes) -> bytes:
    """A PutResponse with only its header (a serialized ResponseHeader)."""
    return bytes_field(PUT_RESPONSE_HEADER, header)


def txn_put_op(rev: int) -> bytes:
    """TxnResponse.responses: a ResponseOp whose PutResponse's header holds
    the revision alone, as apply_txn's inner responses do."""
    return bytes_field(TXN_RESPONSE_RESPONSES, bytes_field(RESPONSE_OP_RESPONSE_PUT, bytes_field(PUT_RESPONSE_HEADER, RESPONSE_HEADER_REVISION + varint(rev))))


def txn_delete_op(rev: int, deleted: int) -> bytes:
    """TxnResponse.responses: a ResponseOp with a DeleteRangeResponse."""
    body = bytes_field(DELETE_RANGE_RESPONSE_HEADER, RESPONSE_HEADER_REVISION + varint(rev))
    if deleted:
        body += DELETE_RANGE_RESPONSE_DELETED + varint(deleted)
    return bytes_field(TXN_RESPONSE_RESPONSES, bytes_field(RESPONSE_OP_RESPONSE_DELETE_RANGE, body))


def txn_response(header: bytes, succeeded: bool, responses: bytes) -> bytes:
    """A TxnResponse: its header (a serialized ResponseHeader), succeeded,
    and its responses (txn_put_op / txn_delete_op fields, concatenated)."""
    return b"".join((bytes_field(TXN_RESPONSE_HEADER, header), TXN_RESPONSE_SUCCEEDED_TRUE if succeeded else b"", responses))
