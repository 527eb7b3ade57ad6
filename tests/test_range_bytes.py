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
            # sides of the precomputed prefixes (brain/wire.py, 16384)
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
