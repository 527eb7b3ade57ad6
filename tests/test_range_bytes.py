"""The KV service's Range answers plain pages with a RangeResponse put
together from the stored KeyValue bytes (brain/apply/range.py,
serialized_range). Those bytes must be exactly what protobuf would give for
the same response, for every kind of Range request."""
from __future__ import annotations

import asyncio
import itertools

from brain.apply.range import execute_range, serialized_range
from brain.apply.txn import apply_put
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from engines import open_engine

REQUESTS = [
    dict(key=b"a", range_end=b"b"),
    dict(key=b"a", range_end=b"b", limit=3),
    dict(key=b"a", range_end=b"b", limit=200),
    dict(key=b"a", range_end=b"\x00", limit=5),
    dict(key=b"a/07"),
    dict(key=b"nothing"),
    dict(key=b"a", range_end=b"b", revision=5, limit=2),
    dict(key=b"a", range_end=b"b", keys_only=True, limit=4),
    dict(key=b"a", range_end=b"b", count_only=True),
    dict(key=b"a", range_end=b"b", sort_order=pb.RangeRequest.DESCEND, limit=3),
    dict(key=b"a", range_end=b"b", sort_target=pb.RangeRequest.MOD, limit=3),
    dict(key=b"a", range_end=b"b", min_mod_revision=10),
]


def test_serialized_range_is_protobufs_own_encoding(tmp_path):
    async def main() -> None:
        engine = open_engine("leveldb", data_dir=str(tmp_path / "db"))
        store = await MVCCStore.open(engine)
        try:
            # values of many sizes: one- to three-byte length varints, on both
            # sides of the precomputed prefixes (brain/wire/__init__.py, 16384)
            for i, size in zip(range(40), itertools.cycle([0, 1, 100, 127, 128, 300, 16340, 16360, 20000, 70000])):
                r = pb.PutRequest(key=b"a/%02d" % i, value=b"v" * size, lease=0)
                await store.write(lambda txn, r=r: apply_put(txn, r))
            view = store.view
            for fields in REQUESTS:
                req = pb.RangeRequest(**fields)
                header = pb.ResponseHeader(cluster_id=7, member_id=9, raft_term=1, revision=view.rev)
                got = await serialized_range(view, req, header)
                want = await execute_range(view, req, view.rev)
                want.header.CopyFrom(header)
                raw = got if isinstance(got, bytes) else got.SerializeToString()
                assert raw == want.SerializeToString(), fields
                assert pb.RangeResponse.FromString(raw) == want, fields
        finally:
            await store.close()
            await engine.close()

    asyncio.run(main())


def test_large_ranges_in_pieces_are_protobufs_own_encoding(tmp_path):
    """A range of more KeyValues than LARGE_RANGE is framed on a thread and
    handed to the transport in pieces; its engine scan finishes on a read
    thread. The bytes must still be protobuf's."""
    from brain.apply.range import LARGE_RANGE
    from brain.wire import Pieces

    n = LARGE_RANGE + 700

    async def main() -> None:
        engine = open_engine("leveldb", data_dir=str(tmp_path / "db"))
        store = await MVCCStore.open(engine)
        try:
            for i in range(0, n, 500):
                reqs = [pb.PutRequest(key=b"a/%06d" % j, value=b"v%d" % j) for j in range(i, min(n, i + 500))]

                async def put_all(txn, reqs=reqs):
                    for r in reqs:
                        await apply_put(txn, r)
                await store.write(put_all)
            view = store.view
            scans = engine.scans_on_thread
            for fields in [dict(key=b"a", range_end=b"b"), dict(key=b"a", range_end=b"b", limit=n - 1),
                           dict(key=b"a", range_end=b"b", keys_only=True), dict(key=b"a/", range_end=b"a0", sort_order=pb.RangeRequest.DESCEND)]:
                req = pb.RangeRequest(**fields)
                header = pb.ResponseHeader(cluster_id=7, member_id=9, raft_term=1, revision=view.rev)
                got = await serialized_range(view, req, header)
                want = await execute_range(view, req, view.rev)
                want.header.CopyFrom(header)
                raw = got.join() if isinstance(got, Pieces) else got
                assert isinstance(raw, bytes) and raw == want.SerializeToString(), fields
                assert len(want.kvs) >= n - 1
            assert engine.scans_on_thread > scans
        finally:
            await store.close()
            await engine.close()

    asyncio.run(main())


def test_large_range_over_both_transports(tmp_path):
    """The pieces reach a real client whole, on brain's h2 transport and on grpcio's."""
    from brain.apply.range import LARGE_RANGE
    from brain.etcdpb import rpc_pb2_grpc
    from tests.servers import brain_server

    n = LARGE_RANGE + 10
    for transport in ("h2", "grpcio"):
        srv = brain_server(str(tmp_path), "--transport", transport).start()
        try:
            with srv.channel() as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                for i in range(0, n, 100):
                    ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"k/%05d" % j, value=b"x" * 300))
                           for j in range(i, min(n, i + 100))]
                    kv.Txn(pb.TxnRequest(success=ops))
                resp = kv.Range(pb.RangeRequest(key=b"k/", range_end=b"k0"))
                assert resp.count == n and len(resp.kvs) == n
                assert [kv.key for kv in resp.kvs] == [b"k/%05d" % j for j in range(n)]
                assert all(kv.value == b"x" * 300 for kv in resp.kvs)
        finally:
            srv.stop()
