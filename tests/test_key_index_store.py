"""Reads through the store while a 20,000-key DeleteRange is applied to the
key index in slices (KeyIndex.apply_in_slices, as the store's publish
starts it for a big commit): counts and pages at the new revision and at the
one before are exactly right whenever they are answered, creates made
meanwhile are seen as creates, and reads wait no longer than the update."""
from __future__ import annotations

import asyncio

from brain.apply.txn import apply_delete, apply_put
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from engines import open_engine
from test_watch_hub import txn_puts

N = 20_000


def key(i: int) -> bytes:
    return b"ev/%07d" % i


def test_reads_during_a_sliced_index_update_see_one_revision_or_the_other():
    async def scenario() -> None:
        store = await MVCCStore.open(open_engine("memory"), sync=False)
        await store.index_loaded()
        index = store.index
        # the store's publish starts a big commit's update in slices (not
        # awaited); smaller slices here make more turns to read in
        index.apply_in_slices = (  # type: ignore[method-assign]
            lambda changes, rev, slice_size=0, _f=index.apply_in_slices: _f(changes, rev, slice_size=1024))
        for i in range(0, N, 2000):
            await txn_puts(store, [(key(j), b"v") for j in range(i, i + 2000)])
        await index.settled()
        before = store.rev
        big = asyncio.ensure_future(
            store.write(lambda txn: apply_delete(txn, pb.DeleteRangeRequest(key=b"ev/", range_end=b"ev0"))))
        while not index.updating:
            await asyncio.sleep(0)
        view = store.view  # published at the delete's revision, index half way
        deleted_at = view.rev
        assert deleted_at == before + 1
        reads = [
            asyncio.ensure_future(view.range(b"ev/", b"ev0", count_only=True)),
            asyncio.ensure_future(view.range(b"ev/", b"ev0", rev=before, count_only=True)),
            asyncio.ensure_future(view.range(b"ev/", b"ev0", rev=before, limit=3)),
            asyncio.ensure_future(view.range(b"ev/0005000", b"ev/0005010", rev=before)),
        ]
        # a create of a key the delete removed: its previous version is none
        created = asyncio.ensure_future(store.write(lambda txn: apply_put(txn, pb.PutRequest(key=key(7), value=b"new", prev_kv=True))))
        updating_turns = 0
        while index.updating:
            updating_turns += 1
            await asyncio.sleep(0)
        now, then, page, slice_ = await asyncio.gather(*reads)
        assert now.count == 0 and not now.kvs
        assert then.count == N and len(page.kvs) == 3 and page.count == N
        assert len(slice_.kvs) == 10
        put = await created
        assert not put.HasField("prev_kv")
        await big
        assert updating_turns >= 10  # 20,000 changes, 1,024 a turn
        got = await store.view.range(b"ev/", b"ev0")
        assert got.count == 1
        await store.close()

    asyncio.run(scenario())
