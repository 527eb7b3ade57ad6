"""The bulk-put path (brain/apply/bulk_puts.py) and the plain Put
(brain/apply/plain_put.py) against the general one
(apply_txn): the same requests, applied in the same order to two stores,
must give the same answers byte for byte, the same errors and the same
stored state (key set and leased keys included). And bulk_puts() must send
every other shape the general way."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from brain.errors import DomainError
from brain.apply.bulk_puts import MIN_OPS, apply_bulk_puts, bulk_puts
from brain.apply.txn import apply_txn
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from brain.server.header import Header
from engines import open_engine

KEYS = [b"k%d" % i for i in range(12)]
LEASE = 7
CLUSTER, MEMBER = 0x7EDCBA9876543210, 12345
MAX_OPS = 8


@st.composite
def bulk_txns(draw) -> pb.TxnRequest:
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=MIN_OPS, max_size=MAX_OPS, unique=True))
    ops = []
    for k in keys:
        lease = draw(st.sampled_from([0, 0, 0, LEASE, 99]))  # 99: no such lease
        ops.append(pb.RequestOp(request_put=pb.PutRequest(key=k, value=draw(st.sampled_from([b"", b"v1", b"v" * 300])), lease=lease)))
    return pb.TxnRequest(success=ops)


@st.composite
def deletes(draw) -> pb.TxnRequest:
    return pb.TxnRequest(success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=draw(st.sampled_from(KEYS))))])


async def _open() -> MVCCStore:
    store = await MVCCStore.open(open_engine("memory"))
    store.lease_exists = lambda lease: lease == LEASE
    return store


async def _pair(general_apply):
    """Two stores with the same history to come: one for the short path
    (with its headers), one for general_apply with the header the KV
    service fills in."""
    fast, general = await _open(), await _open()
    general_header = Header(general, CLUSTER, MEMBER)

    async def general_fn(txn, req):
        resp = await general_apply(txn, req)
        general_header.fill(resp.header)
        return resp

    return fast, general, Header(fast, CLUSTER, MEMBER), general_fn


async def _apply(store: MVCCStore, fn) -> bytes:
    try:
        resp = await store.write(fn)
    except DomainError as e:
        return b"error: " + type(e).__name__.encode()
    return resp if isinstance(resp, bytes) else resp.SerializeToString()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(bulk_txns(), bulk_txns(), deletes()), min_size=1, max_size=10))
def test_bulk_put_path_answers_as_apply_txn(requests):
    async def main():
        fast, general, fast_header, general_fn = await _pair(apply_txn)

        for t in requests:
            puts = bulk_puts(t, MAX_OPS)
            if t.success[0].WhichOneof("request") == "request_put":
                assert puts is not None
                got = await _apply(fast, lambda txn: apply_bulk_puts(txn, puts, fast_header))
            else:
                assert puts is None
                got = await _apply(fast, lambda txn: general_fn(txn, t))
            assert got == await _apply(general, lambda txn: general_fn(txn, t)), t
            if not got.startswith(b"error: "):
                pb.TxnResponse.FromString(got)
            assert fast.rev == general.rev
        assert await fast.view.snapshot.scan(b"", None) == await general.view.snapshot.scan(b"", None)
        await fast.close()
        await general.close()

    asyncio.run(main())


def test_other_shapes_go_the_general_way():
    put = lambda k: pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"v"))  # noqa: E731
    four = [put(b"a"), put(b"b"), put(b"c"), put(b"d")]
    assert bulk_puts(pb.TxnRequest(success=four), 128) is not None
    not_bulk = [
        pb.TxnRequest(success=four[:3]),  # too few to matter
        pb.TxnRequest(success=four, compare=[pb.Compare(key=b"a")]),
        pb.TxnRequest(success=four, failure=[put(b"a")]),
        pb.TxnRequest(success=four + [put(b"a")]),  # ErrDuplicateKey
        pb.TxnRequest(success=four + [put(b"")]),  # ErrEmptyKey
        pb.TxnRequest(success=four + [pb.RequestOp(request_put=pb.PutRequest(key=b"e", prev_kv=True))]),
        pb.TxnRequest(success=four + [pb.RequestOp(request_put=pb.PutRequest(key=b"e", ignore_value=True))]),
        pb.TxnRequest(success=four + [pb.RequestOp(request_put=pb.PutRequest(key=b"e", ignore_lease=True))]),
        pb.TxnRequest(success=four + [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"e"))]),
        pb.TxnRequest(success=four + [pb.RequestOp(request_range=pb.RangeRequest(key=b"e"))]),
        pb.TxnRequest(success=four + [pb.RequestOp()]),
    ]
    for t in not_bulk:
        assert bulk_puts(t, 128) is None, t
    assert bulk_puts(pb.TxnRequest(success=four), 3) is None  # ErrTooManyOps


@st.composite
def puts(draw) -> pb.PutRequest:
    return pb.PutRequest(key=draw(st.sampled_from(KEYS)), value=draw(st.sampled_from([b"", b"v1", b"v" * 300])),
                         lease=draw(st.sampled_from([0, 0, LEASE, 99])))


@settings(max_examples=100, deadline=None)
@given(st.lists(puts(), min_size=1, max_size=12))
def test_plain_put_answers_as_apply_put(requests):
    """brain/apply/plain_put.py against apply_put with the header filled in."""
    from brain.apply.plain_put import apply_plain_put, is_plain
    from brain.apply.txn import apply_put

    async def main():
        fast, general, fast_header, general_fn = await _pair(apply_put)

        for p in requests:
            assert is_plain(p)
            got = await _apply(fast, lambda txn: apply_plain_put(txn, p, fast_header))
            assert got == await _apply(general, lambda txn: general_fn(txn, p)), p
        assert await fast.view.snapshot.scan(b"", None) == await general.view.snapshot.scan(b"", None)
        await fast.close()
        await general.close()

    asyncio.run(main())
    assert not any(is_plain(pb.PutRequest(key=b"k", **{f: True})) for f in ("prev_kv", "ignore_value", "ignore_lease"))
