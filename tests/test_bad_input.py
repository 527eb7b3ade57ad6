"""Malformed, oversized and out-of-range requests: brain answers each with the
gRPC code and message real etcd gives, writes nothing, and keeps serving."""
from __future__ import annotations

import grpc
import pytest

from brain.etcdpb import rpc_pb2 as pb
from differential import Pair

MiB = 1024 * 1024


def _put(key=b"k", value=b"v", **kw):
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def _del(key, end=b""):
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))


CASES = [
    ("range empty key", "Range", pb.RangeRequest()),
    ("range future revision", "Range", pb.RangeRequest(key=b"a", revision=10_000)),
    ("range compacted revision", "Range", pb.RangeRequest(key=b"a", revision=2)),
    ("put empty key", "Put", pb.PutRequest(value=b"x")),
    ("put ignore_value with value", "Put", pb.PutRequest(key=b"a", value=b"x", ignore_value=True)),
    ("put ignore_lease with lease", "Put", pb.PutRequest(key=b"a", lease=5, ignore_lease=True)),
    ("put ignore_value missing key", "Put", pb.PutRequest(key=b"missing", ignore_value=True)),
    ("put ignore_lease missing key", "Put", pb.PutRequest(key=b"missing", ignore_lease=True)),
    ("put unknown lease", "Put", pb.PutRequest(key=b"a", value=b"x", lease=123456)),
    ("put value too large", "Put", pb.PutRequest(key=b"big", value=b"x" * (3 * MiB // 2))),
    ("delete empty key", "DeleteRange", pb.DeleteRangeRequest()),
    ("txn compare empty key", "Txn", pb.TxnRequest(compare=[pb.Compare(result=0)])),
    ("txn too many ops", "Txn", pb.TxnRequest(success=[_put(b"k%d" % i) for i in range(129)])),
    ("txn too many compares", "Txn", pb.TxnRequest(compare=[pb.Compare(key=b"k%d" % i) for i in range(129)])),
    ("txn 128 ops is fine", "Txn", pb.TxnRequest(success=[_put(b"ok%d" % i) for i in range(128)])),
    ("txn duplicate put", "Txn", pb.TxnRequest(success=[_put(b"d"), _put(b"d")])),
    ("txn put and delete same key", "Txn", pb.TxnRequest(success=[_put(b"d"), _del(b"d")])),
    ("txn put inside deleted range", "Txn", pb.TxnRequest(success=[_del(b"a", b"z"), _put(b"m")])),
    ("txn overlapping deletes are fine", "Txn", pb.TxnRequest(success=[_del(b"a", b"z"), _del(b"b")])),
    ("txn nested duplicate", "Txn", pb.TxnRequest(success=[_put(b"n"), pb.RequestOp(request_txn=pb.TxnRequest(success=[_put(b"n")]))])),
    ("txn nested then/else may share", "Txn", pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest(success=[_put(b"n")], failure=[_put(b"n")]))])),
    ("txn empty op", "Txn", pb.TxnRequest(success=[pb.RequestOp()])),
    ("txn op empty key", "Txn", pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest())])),
    ("txn range future rev", "Txn", pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a", revision=10_000))])),
    ("txn failed put precondition writes nothing", "Txn", pb.TxnRequest(success=[_put(b"t1"), _put(b"missing", b"", ignore_value=True)])),
    ("txn nested too many ops", "Txn", pb.TxnRequest(success=[_put(b"o%d" % i) for i in range(100)] + [pb.RequestOp(request_txn=pb.TxnRequest(success=[_put(b"p%d" % i) for i in range(29)]))])),
    ("txn value too large", "Txn", pb.TxnRequest(success=[_put(b"big", b"x" * (3 * MiB // 2))])),
    ("compact future", "Compact", pb.CompactionRequest(revision=10_000)),
    ("compact already compacted", "Compact", pb.CompactionRequest(revision=3)),
    ("compact zero", "Compact", pb.CompactionRequest(revision=0)),
]


@pytest.fixture
def pair(etcd, brain):
    with etcd.channel() as ce, brain.channel() as cb:
        p = Pair(ce, cb)
        for i in range(5):  # revisions 2..6, compacted at 4
            p.both("Put", pb.PutRequest(key=b"a", value=b"%d" % i))
        p.both("Compact", pb.CompactionRequest(revision=4, physical=True))
        yield p


def test_bad_requests_match_etcd(pair):
    for name, method, req in CASES:
        pair.both(method, req, name)
    # nothing above left the two stores apart, and both still serve
    pair.both("Range", pb.RangeRequest(key=b"\x00", range_end=b"\x00"), "final state")
    pair.both("Put", pb.PutRequest(key=b"after", value=b"1"), "still serving")


def test_puts_at_the_request_size_limit_match_etcd(pair):
    """Puts whose size is either side of max-request-bytes (with etcd's
    framing), and either side of where brain starts computing a put's size:
    taken or refused as etcd takes or refuses them. Not closer than a few
    bytes: etcd's own limit moves by a byte with its member ID (the length
    of its raft request ID's varint)."""
    for short in (120, 70, 64, 60, 30, 21, 10):
        pair.both("Put", pb.PutRequest(key=b"big", value=b"x" * (3 * MiB // 2 - short)), f"value of the limit - {short} bytes")
    pair.both("Range", pb.RangeRequest(key=b"big", keys_only=True), "what was taken")


def test_oversized_message_refused_by_transport(pair):
    """Past max-request-bytes + 512 KiB the gRPC layer refuses the message
    (the text differs between Go's and C's gRPC; the code is the same)."""
    req = pb.PutRequest(key=b"huge", value=b"x" * (2 * MiB + 600 * 1024))
    a = pair._call(pair.etcd, "Put", req)
    b = pair._call(pair.brain, "Put", req)
    assert a.code == b.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    pair.both("Range", pb.RangeRequest(key=b"huge"), "not written")


def test_garbage_bytes_do_not_hurt(brain, etcd):
    """Bytes that are no protobuf at all: refused, and the server serves on."""
    for srv in (etcd, brain):
        with srv.channel() as ch:
            raw = ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as info:
                raw(b"\xff\xff\xff\xff\x0f garbage", timeout=5)
            assert info.value.code() == grpc.StatusCode.INTERNAL
    with brain.channel() as ch:
        from brain.etcdpb import rpc_pb2_grpc

        assert rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"ok", value=b"1")).header.revision == 2


# (call shape, method) of every shape brain serves; bytes that are no
# protobuf message of any request type (field 1 with the invalid wire type 7)
UNPARSABLE_CALLS = [
    ("unary", "/etcdserverpb.KV/Put"),
    ("unary", "/etcdserverpb.Lease/LeaseGrant"),
    ("server_stream", "/etcdserverpb.Maintenance/Snapshot"),
    ("bidi", "/etcdserverpb.Watch/Watch"),
    ("bidi", "/etcdserverpb.Lease/LeaseKeepAlive"),
]
NOT_PROTOBUF = b"\x0f\x01garbage"
# grpc-go's words before the protobuf library's reason, which differs
GRPC_UNMARSHAL_PREFIXES = ("grpc: error unmarshalling request: ", "grpc: failed to unmarshal the received message ")


def _unparsable_status(ch: grpc.Channel, shape: str, method: str, first_ok: bytes | None = None) -> tuple[grpc.StatusCode, str]:
    """The status a call ends with when its request does not parse; for a
    bidi call, after first_ok (a valid request) when given."""
    try:
        if shape == "unary":
            ch.unary_unary(method)(NOT_PROTOBUF, timeout=10)
        elif shape == "server_stream":
            list(ch.unary_stream(method)(NOT_PROTOBUF, timeout=10))
        else:
            list(ch.stream_stream(method)(iter([m for m in (first_ok, NOT_PROTOBUF) if m is not None]), timeout=10))
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    raise AssertionError(f"{method}: a request that does not parse was answered with OK")


def _prefix(details: str) -> str:
    return next((p for p in GRPC_UNMARSHAL_PREFIXES if details.startswith(p)), details)


def test_unparsable_requests_get_etcds_status_on_every_call_shape(brain, etcd):
    """A request message that does not parse, on a unary, a server-streaming
    and a bidirectional call (Watch and LeaseKeepAlive, also after a valid
    first request): INTERNAL with grpc-go's words, as etcd answers; brain
    logs no error for it however many arrive, and serves on."""
    lease = pb.LeaseGrantRequest(TTL=60, ID=7).SerializeToString()
    firsts = {"/etcdserverpb.Watch/Watch": pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"a")).SerializeToString(),
              "/etcdserverpb.Lease/LeaseKeepAlive": pb.LeaseKeepAliveRequest(ID=7).SerializeToString()}
    with etcd.channel() as ce, brain.channel() as cb:
        for ch in (ce, cb):
            ch.unary_unary("/etcdserverpb.Lease/LeaseGrant")(lease, timeout=10)
        for shape, method in UNPARSABLE_CALLS:
            for first in (None, firsts.get(method)) if shape == "bidi" else (None,):
                want_code, want = _unparsable_status(ce, shape, method, first)
                got_code, got = _unparsable_status(cb, shape, method, first)
                assert want_code == got_code == grpc.StatusCode.INTERNAL, (method, want, got)
                assert _prefix(want) in GRPC_UNMARSHAL_PREFIXES, want
                assert _prefix(got) == _prefix(want), (method, want, got)
        for _ in range(20):
            for shape, method in UNPARSABLE_CALLS:
                _unparsable_status(cb, shape, method)
        from brain.etcdpb import rpc_pb2_grpc

        assert rpc_pb2_grpc.KVStub(cb).Put(pb.PutRequest(key=b"ok", value=b"1")).header.revision == 2
    log = brain.log_tail(1 << 20)
    assert '"level":"error"' not in log and "Traceback" not in log, log[-3000:]


def test_invalid_sort_option(brain):
    """etcd 3.5.1 (the reference here) predates the sort option check that
    etcd added in 3.5.2: it ignores an unknown order and panics on an unknown
    target. brain answers both as etcd 3.5.2 and later do."""
    from brain.etcdpb import rpc_pb2_grpc

    with brain.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for req in (pb.RangeRequest(key=b"a", sort_order=7), pb.RangeRequest(key=b"a", sort_target=9)):
            with pytest.raises(grpc.RpcError) as info:
                kv.Range(req)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "etcdserver: invalid sort option"
        assert kv.Range(pb.RangeRequest(key=b"a")).header.revision == 1
