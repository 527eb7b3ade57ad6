"""A long read must not starve small ones: a whole-range list's engine scan
finishes on the engine's read threads and its response is framed on a
thread, so the event loop keeps answering single-key gets meanwhile.
Observed by counting, not timing: how many gets complete while one large
list is in progress (without the hand-off, none could)."""
from __future__ import annotations

import asyncio

from brain.apply.range import serialized_range
from brain.apply.txn import apply_put
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from engines import open_engine

KEYS = 40_000


def test_gets_complete_while_a_large_list_runs(tmp_path):
    async def main() -> tuple[int, int]:
        engine = open_engine("leveldb", data_dir=str(tmp_path / "db"))
        store = await MVCCStore.open(engine)
        try:
            value = b"v" * 1000
            for i in range(0, KEYS, 1000):
                reqs = [pb.PutRequest(key=b"pods/%06d" % j, value=value) for j in range(i, i + 1000)]

                async def put_all(txn, reqs=reqs):
                    for r in reqs:
                        await apply_put(txn, r)
                await store.write(put_all)
            header = pb.ResponseHeader(revision=store.rev)
            big = asyncio.ensure_future(serialized_range(store.view, pb.RangeRequest(key=b"pods/", range_end=b"pods0"), header))
            await asyncio.sleep(0)  # the list starts
            gets = 0
            while not big.done():
                got = await store.view.range(b"pods/%06d" % (gets % KEYS), None)
                assert len(got.kvs) == 1
                gets += 1
                await asyncio.sleep(0)
            resp = big.result()
            size = resp.size if hasattr(resp, "size") else len(resp)
            return gets, size
        finally:
            await store.close()
            await engine.close()

    gets, size = asyncio.run(main())
    assert size > KEYS * 1000
    assert gets >= 20, f"only {gets} gets completed while the list ran"


def test_gets_complete_while_a_list_page_is_read(tmp_path):
    """A kube-apiserver list page (limit 500) reads the most of its pairs on
    a read thread: the loop answers other clients' gets meanwhile instead
    of after the page."""

    async def main() -> int:
        engine = open_engine("leveldb", data_dir=str(tmp_path / "db"))
        store = await MVCCStore.open(engine)
        try:
            reqs = [pb.PutRequest(key=b"pods/%06d" % j, value=b"v" * 1000) for j in range(2000)]

            async def put_all(txn):
                for r in reqs:
                    await apply_put(txn, r)
            await store.write(put_all)
            header = pb.ResponseHeader(revision=store.rev)
            gets = 0
            for _ in range(5):
                page = asyncio.ensure_future(serialized_range(store.view, pb.RangeRequest(key=b"pods/", range_end=b"pods0", limit=500), header))
                await asyncio.sleep(0)  # the page starts
                while not page.done():
                    assert len((await store.view.range(b"pods/000007", None)).kvs) == 1
                    gets += 1
                    await asyncio.sleep(0)
                assert len(page.result()) > 500 * 1000
            return gets
        finally:
            await store.close()
            await engine.close()

    assert asyncio.run(main()) >= 5
