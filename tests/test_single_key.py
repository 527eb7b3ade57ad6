"""The one-key Txn path (brain/apply/single_key.py) against the general one
(apply_txn): the same requests, applied in the same order to two stores,
must give the same answers byte for byte (the one-key path serializes its
write answers itself), the same errors and the same stored state. And single_key() must send every other shape the general way."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from brain.errors import DomainError
from brain.apply.single_key import NOT_SINGLE, READS, WRITES, apply_single_key, single_key
from brain.apply.txn import apply_txn
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from brain.mvcc.txn_write import Batch, WriteTxn
from brain.server.header import Header
from engines import open_engine

C = pb.Compare
KEYS = [b"a", b"b", b"c"]
LEASE = 7  # the one lease that exists
CLUSTER, MEMBER = 0x7EDCBA9876543210, 12345  # ids of many-byte varints

keys = st.sampled_from(KEYS)


@st.composite
def compares(draw) -> pb.Compare:
    target = draw(st.sampled_from([C.MOD, C.VERSION, C.CREATE, C.VALUE, C.LEASE]))
    c = pb.Compare(key=draw(keys), target=target, result=draw(st.sampled_from([C.EQUAL, C.NOT_EQUAL, C.GREATER, C.LESS])))
    small = st.integers(0, 12)
    if target == C.MOD:
        c.mod_revision = draw(small)
    elif target == C.VERSION:
        c.version = draw(small)
    elif target == C.CREATE:
        c.create_revision = draw(small)
    elif target == C.LEASE:
        c.lease = draw(st.sampled_from([0, LEASE]))
    elif draw(st.booleans()):
        c.value = draw(st.sampled_from([b"", b"v1", b"v2"]))
    return c


@st.composite
def ops(draw) -> pb.RequestOp:
    kind = draw(st.sampled_from(["put", "put", "delete", "range"]))
    if kind == "put":
        lease = draw(st.sampled_from([0, 0, LEASE, 99]))  # 99: no such lease
        return pb.RequestOp(request_put=pb.PutRequest(key=draw(keys), value=draw(st.sampled_from([b"v1", b"v2"])), lease=lease))
    if kind == "delete":
        return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=draw(keys)))
    return pb.RequestOp(request_range=pb.RangeRequest(key=draw(keys)))


@st.composite
def txns(draw) -> pb.TxnRequest:
    t = pb.TxnRequest(compare=[draw(compares())])
    for branch in (t.success, t.failure):
        if draw(st.booleans()):
            branch.append(draw(ops()))
    return t


async def _open() -> MVCCStore:
    store = await MVCCStore.open(open_engine("memory"))
    store.lease_exists = lambda lease: lease == LEASE
    return store


def _general(header: Header):
    """apply_txn, with the header the KV service fills in."""

    async def apply(txn: WriteTxn, t: pb.TxnRequest) -> pb.TxnResponse:
        resp = await apply_txn(txn, t)
        header.fill(resp.header)
        return resp

    return apply


async def _apply(store: MVCCStore, t: pb.TxnRequest, fn) -> bytes:
    try:
        if single_key(t) == READS:
            resp = await fn(WriteTxn(Batch.on(store.view), store.lease_exists), t)
        else:
            resp = await store.write(lambda txn: fn(txn, t))
    except DomainError as e:
        return b"error: " + type(e).__name__.encode()
    return resp if isinstance(resp, bytes) else resp.SerializeToString()


async def _state(store: MVCCStore) -> list:
    return await store.view.snapshot.scan(K.INDEX, K.INDEX_END)


@settings(max_examples=150, deadline=None)
@given(st.lists(txns(), min_size=1, max_size=12))
def test_single_key_path_answers_as_apply_txn(requests):
    async def main():
        fast, general = await _open(), await _open()
        fast_header, general_header = Header(fast, CLUSTER, MEMBER), Header(general, CLUSTER, MEMBER)
        one_key = lambda txn, t: apply_single_key(txn, t, fast_header)  # noqa: E731
        for t in requests:
            assert single_key(t) in (READS, WRITES)
            got = await _apply(fast, t, one_key)
            assert got == await _apply(general, t, _general(general_header)), t
            if not got.startswith(b"error: "):
                pb.TxnResponse.FromString(got)  # and protobuf reads it
            assert fast.rev == general.rev
        assert await _state(fast) == await _state(general)
        await fast.close()
        await general.close()

    asyncio.run(main())


def _txn(**op) -> pb.TxnRequest:
    return pb.TxnRequest(compare=[pb.Compare(key=b"k", target=C.MOD)], success=[pb.RequestOp(**op)])


def test_other_shapes_go_the_general_way():
    put = pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"v"))
    assert single_key(pb.TxnRequest(compare=[pb.Compare(key=b"k")], success=[put])) == WRITES
    assert single_key(pb.TxnRequest(compare=[pb.Compare(key=b"k")])) == READS
    not_single = [
        pb.TxnRequest(success=[put]),  # no compare
        pb.TxnRequest(compare=[pb.Compare(key=b"k"), pb.Compare(key=b"j")], success=[put]),
        pb.TxnRequest(compare=[pb.Compare(key=b"")], success=[put]),  # ErrEmptyKey
        pb.TxnRequest(compare=[pb.Compare(key=b"k", range_end=b"l")], success=[put]),
        pb.TxnRequest(compare=[pb.Compare(key=b"k")], success=[put, put]),  # ErrDuplicateKey
        pb.TxnRequest(compare=[pb.Compare(key=b"k")], failure=[put, put]),
        _txn(request_put=pb.PutRequest(key=b"", value=b"v")),
        _txn(request_put=pb.PutRequest(key=b"k", prev_kv=True)),
        _txn(request_put=pb.PutRequest(key=b"k", ignore_value=True)),
        _txn(request_put=pb.PutRequest(key=b"k", ignore_lease=True)),
        _txn(request_delete_range=pb.DeleteRangeRequest(key=b"k", range_end=b"l")),
        _txn(request_delete_range=pb.DeleteRangeRequest(key=b"k", prev_kv=True)),
        _txn(request_delete_range=pb.DeleteRangeRequest(key=b"")),
        _txn(request_range=pb.RangeRequest(key=b"k", revision=3)),
        _txn(request_range=pb.RangeRequest(key=b"k", limit=1)),
        _txn(request_range=pb.RangeRequest(key=b"k", sort_order=9)),  # ErrInvalidSortOption
        _txn(request_range=pb.RangeRequest(key=b"")),
        _txn(request_txn=pb.TxnRequest()),
        _txn(),  # an op with no request: ErrKeyNotFound
    ]
    for t in not_single:
        assert single_key(t) == NOT_SINGLE, t
