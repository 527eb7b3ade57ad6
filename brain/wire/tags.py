"""The tags of every protobuf field brain encodes by hand, as bytes ready to
concatenate, named MESSAGE_FIELD after the field they encode.

Each is read from the generated message's descriptor (number and type), once
at import: a tag cannot drift from rpc.proto / kv.proto, and a field that
does not exist fails the import.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from brain.etcdpb import kv_pb2, rpc_pb2
from brain.wire import LEN, VARINT, tag, varint

_LENGTH_DELIMITED = {FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING}
_VARINTS = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM,
}


def field_tag(message: type, name: str) -> bytes:
    """The tag of message's field `name` (a varint or length-delimited field)."""
    field = message.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
    if field.type in _LENGTH_DELIMITED:
        return tag(field.number, LEN)
    if field.type in _VARINTS:
        return tag(field.number, VARINT)
    raise ValueError(f"{message.__name__}.{name}: a field type brain does not encode by hand")


# etcdserverpb.ResponseHeader, in field-number order (a serialized header is
# these around the revision)
RESPONSE_HEADER_CLUSTER_ID = field_tag(rpc_pb2.ResponseHeader, "cluster_id")
RESPONSE_HEADER_MEMBER_ID = field_tag(rpc_pb2.ResponseHeader, "member_id")
RESPONSE_HEADER_REVISION = field_tag(rpc_pb2.ResponseHeader, "revision")
RESPONSE_HEADER_RAFT_TERM = field_tag(rpc_pb2.ResponseHeader, "raft_term")

# Range: the request a one-key Txn's Range branch may hold, and the page
RANGE_REQUEST_KEY = field_tag(rpc_pb2.RangeRequest, "key")
RANGE_RESPONSE_KVS = field_tag(rpc_pb2.RangeResponse, "kvs")

# LeaseTimeToLive: keys is the response's last field, so a serialized
# response without keys followed by the framed keys is the whole of it
LEASE_TIME_TO_LIVE_RESPONSE_KEYS = field_tag(rpc_pb2.LeaseTimeToLiveResponse, "keys")

# the write responses
PUT_RESPONSE_HEADER = field_tag(rpc_pb2.PutResponse, "header")
DELETE_RANGE_RESPONSE_HEADER = field_tag(rpc_pb2.DeleteRangeResponse, "header")
DELETE_RANGE_RESPONSE_DELETED = field_tag(rpc_pb2.DeleteRangeResponse, "deleted")
RESPONSE_OP_RESPONSE_PUT = field_tag(rpc_pb2.ResponseOp, "response_put")
RESPONSE_OP_RESPONSE_DELETE_RANGE = field_tag(rpc_pb2.ResponseOp, "response_delete_range")
TXN_RESPONSE_HEADER = field_tag(rpc_pb2.TxnResponse, "header")
TXN_RESPONSE_SUCCEEDED = field_tag(rpc_pb2.TxnResponse, "succeeded")
TXN_RESPONSE_RESPONSES = field_tag(rpc_pb2.TxnResponse, "responses")
# succeeded = true (false, proto3's default, is left out)
TXN_RESPONSE_SUCCEEDED_TRUE = TXN_RESPONSE_SUCCEEDED + varint(1)

# mvccpb.KeyValue: a delete's tombstone (brain/wire/stored.py)
KEY_VALUE_KEY = field_tag(kv_pb2.KeyValue, "key")
KEY_VALUE_MOD_REVISION = field_tag(kv_pb2.KeyValue, "mod_revision")

# mvccpb.Event and etcdserverpb.WatchResponse
EVENT_TYPE = field_tag(kv_pb2.Event, "type")
EVENT_KV = field_tag(kv_pb2.Event, "kv")
EVENT_PREV_KV = field_tag(kv_pb2.Event, "prev_kv")
# type = DELETE (PUT, 0, is left out)
EVENT_TYPE_DELETE = EVENT_TYPE + varint(kv_pb2.Event.DELETE)
WATCH_RESPONSE_HEADER = field_tag(rpc_pb2.WatchResponse, "header")
WATCH_RESPONSE_WATCH_ID = field_tag(rpc_pb2.WatchResponse, "watch_id")
WATCH_RESPONSE_FRAGMENT = field_tag(rpc_pb2.WatchResponse, "fragment")
WATCH_RESPONSE_EVENTS = field_tag(rpc_pb2.WatchResponse, "events")
# fragment = true: every piece of a split response but the last
WATCH_RESPONSE_FRAGMENT_TRUE = WATCH_RESPONSE_FRAGMENT + varint(1)
