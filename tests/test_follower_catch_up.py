"""A follower's catch-up after a long gap, in process on the memory engine
(one engine, two stores: one commits as a leader would, the other follows
it through EngineFollower): the gap is published in chunks bounded by
revisions and by bytes, with readers running between chunks; every view a
reader meets answers for its own revision (never a newer value, never an
older view after a newer one), and the commit listeners (the watch hub) see
every revision once, in order. The same across real processes over the fake
TiKV is in test_tikv_ha.py."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from brain.apply.txn import apply_put
from brain.cluster.follower import EngineFollower
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from brain.mvcc.kv import Change
from engines.memory import MemoryEngine


async def put(store: MVCCStore, key: bytes, value: bytes) -> int:
    req = pb.PutRequest(key=key, value=value)
    resp = await store.write(lambda txn: apply_put(txn, req))
    return resp.header.revision


class Listener:
    """A commit listener: the revisions of every call, in order, and the
    bytes of its events."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int]] = []
        self.sizes: list[int] = []

    def __call__(self, changes: Sequence[Change], rev: int) -> None:
        self.calls.append(([c.rev for c in changes], rev))
        self.sizes.append(sum(len(c.key) + len(c.kv) + len(c.prev or b"") for c in changes))


async def gap_and_catch_up(n: int, value_size: int, **chunking: int) -> tuple[EngineFollower, Listener, list[int], int]:
    """n revisions committed while the follower does not look, then one
    catch-up with a reader checking every view it meets. Returns the
    follower, its listener, the view revisions the reader met, and the
    revision the gap started after."""
    engine = MemoryEngine()
    leader = await MVCCStore.open(engine)
    store = await MVCCStore.open(engine)
    follower = EngineFollower(store, engine, **chunking)
    listener = Listener()
    store.add_listener(listener)
    base = store.rev
    pad = b"x" * value_size
    for i in range(n):
        # every revision: the counter key overwritten, and a fresh key
        assert await put(leader, b"k" if i % 2 else b"f/%05d" % i, b"%d:" % i + pad) == base + 1 + i
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            view = store.view
            rev = view.rev
            seen.append(rev)
            written = rev - base  # writes 0 .. written-1 are in this view
            got = await view.range(b"k", None)
            last_k = max((i for i in range(written) if i % 2), default=None)
            if last_k is None:
                assert got.kvs == []
            else:
                kv = kv_pb2.KeyValue.FromString(got.kvs[0])
                assert (kv.mod_revision, kv.value.split(b":")[0]) == (base + 1 + last_k, b"%d" % last_k), \
                    f"the view at {rev} read a value of another revision"
            fresh = await view.range(b"f/", b"f0")
            assert fresh.count == len(fresh.kvs) == (written + 1) // 2, f"the view at {rev} read another revision's keys"
            counted = await view.range(b"f/", b"f0", count_only=True)
            assert counted.count == (written + 1) // 2
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(reader())
    try:
        assert await follower.catch_up() == base + n
        await asyncio.sleep(0)
        done.set()
        await task
    finally:
        done.set()
        await leader.close()
        await store.close()
    return follower, listener, seen, base


def test_a_long_gap_is_published_in_chunks_bounded_by_revisions():
    async def scenario() -> None:
        n = 600
        follower, listener, seen, base = await gap_and_catch_up(n, 10, chunk_revisions=50)
        assert follower.caught_up_revisions == n
        assert follower.caught_up_chunks >= n // 50, "the gap went in fewer chunks than its revisions allow"
        assert len(listener.calls) == follower.caught_up_chunks
        for revs, rev in listener.calls:
            assert len(revs) <= 50 and revs[-1] == rev
        # every revision once, in order
        assert [r for revs, _ in listener.calls for r in revs] == list(range(base + 1, base + n + 1))
        # readers ran between the chunks, and never met a view older than one before
        assert seen == sorted(seen)
        assert any(base < r < base + n for r in seen), f"readers met no chunk's view: {sorted(set(seen))}"

    asyncio.run(scenario())


def test_a_long_gap_of_large_values_is_published_in_chunks_bounded_by_bytes():
    async def scenario() -> None:
        n, size, limit = 300, 4000, 100_000
        follower, listener, seen, base = await gap_and_catch_up(n, size, chunk_revisions=1000, chunk_bytes=limit)
        assert follower.caught_up_chunks >= n * size // limit, "the bytes bound did not cut the gap"
        # reads are sized by the bytes per revision read before: a chunk
        # passes the bound by a revision or two
        assert max(listener.sizes) <= limit + 3 * 2 * size, listener.sizes
        assert [r for revs, _ in listener.calls for r in revs] == list(range(base + 1, base + n + 1))
        assert seen == sorted(seen) and any(base < r < base + n for r in seen)

    asyncio.run(scenario())
