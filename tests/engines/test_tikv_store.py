"""The MVCC store on the TiKV engine, over the tikv-client test double:
commits conditional on the revision key, commits with an unknown outcome
settled by reading the revision back (never a revision written twice or
skipped), another brain process writing to the same keyspace, and a brain
process replaced by a fresh one that carries on from the same TiKV."""
from __future__ import annotations

import asyncio

import pytest
from tikv_double import FakeTikv

from brain.errors import DomainError, RequestTimeoutError
from brain.apply.txn import apply_put
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.lease import Lessor
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from engines.tikv import TikvEngine

PREFIX = b"brain/test/"


def run(coro):
    return asyncio.run(coro)


async def open_store(cluster: FakeTikv, **options) -> tuple[TikvEngine, MVCCStore]:
    engine = await TikvEngine.open(cluster.client(), key_prefix=PREFIX, commit_timeout=0.3, **options)
    return engine, await MVCCStore.open(engine)


async def put(store: MVCCStore, key: bytes, value: bytes, lease: int = 0) -> pb.PutResponse:
    req = pb.PutRequest(key=key, value=value, lease=lease)
    return await store.write(lambda txn: apply_put(txn, req))


async def value_of(store: MVCCStore, key: bytes) -> bytes | None:
    raw = await store.view.get_latest(key)
    return None if raw is None else kv_pb2.KeyValue.FromString(raw).value


async def revisions_logged(engine: TikvEngine) -> list[int]:
    """The revisions with a revision-log entry, in order (one per committed batch revision)."""
    return [K.unpack_rev(k[1:])[0] for k, _ in await engine.scan(K.EVENTS, K.EVENTS_END, keys_only=True)]


async def close(engine: TikvEngine, store: MVCCStore) -> None:
    await store.close()
    await engine.close()


def test_the_writer_commits_conditionally_on_the_revision_key():
    async def main():
        cluster = FakeTikv()
        engine, store = await open_store(cluster)
        seen = []
        real = engine.commit_if

        async def spy(expect, batch, sync=True):
            seen.append(list(expect))
            return await real(expect, batch, sync)

        engine.commit_if = spy  # type: ignore[method-assign]
        assert (await put(store, b"a", b"1")).header.revision == 2
        assert (await put(store, b"a", b"2")).header.revision == 3
        assert seen == [[(K.META_REVISION, None)], [(K.META_REVISION, K.pack_rev(2))]]
        await close(engine, store)

    run(main())


@pytest.mark.parametrize("fault", ["undetermined-after", "hang-after"])
def test_an_unknown_commit_that_landed_is_published_once(fault):
    async def main():
        cluster = FakeTikv()
        engine, store = await open_store(cluster)
        await put(store, b"a", b"1")
        cluster.inject_commit(fault)
        r = await put(store, b"b", b"2")  # succeeds: the revision key says it landed
        assert r.header.revision == 3 and store.rev == 3
        assert await value_of(store, b"b") == b"2"
        assert (await put(store, b"c", b"3")).header.revision == 4
        assert await revisions_logged(engine) == [2, 3, 4]
        await close(engine, store)

    run(main())


@pytest.mark.parametrize("fault", ["undetermined-before", "hang-before", "region-error"])
def test_an_unknown_commit_that_did_not_land_fails_and_consumes_no_revision(fault):
    async def main():
        cluster = FakeTikv()
        engine, store = await open_store(cluster)
        await put(store, b"a", b"1")
        cluster.inject_commit(fault)
        with pytest.raises(DomainError) as e:
            await put(store, b"b", b"2")
        assert isinstance(e.value, RequestTimeoutError)
        assert store.rev == 2 and await value_of(store, b"b") is None
        # the next write takes the revision the failed one did not
        assert (await put(store, b"b", b"again")).header.revision == 3
        assert await revisions_logged(engine) == [2, 3]
        await close(engine, store)

    run(main())


@pytest.mark.parametrize("landed", [True, False])
def test_settling_waits_out_an_unreachable_cluster(landed):
    async def main():
        cluster = FakeTikv()
        engine, store = await open_store(cluster)
        await put(store, b"a", b"1")

        async def go_down_for_a_while():
            cluster.down = True
            asyncio.get_running_loop().call_later(0.5, setattr, cluster, "down", False)

        if landed:
            cluster.inject_commit("undetermined-after")
            cluster.after_commit = go_down_for_a_while
        else:
            cluster.inject_commit("undetermined-before")
            cluster.before_commit = go_down_for_a_while
        attempt = put(store, b"b", b"2")
        if landed:
            assert (await attempt).header.revision == 3
        else:
            with pytest.raises(DomainError):
                await attempt
        assert cluster.calls["timestamp"] > 3  # it kept asking while the cluster was down
        assert (await put(store, b"c", b"3")).header.revision == (4 if landed else 3)
        await close(engine, store)

    run(main())


def test_batches_pipelined_behind_an_unknown_commit_follow_its_fate():
    async def main():
        cluster = FakeTikv()
        engine, store = await open_store(cluster)
        await put(store, b"a", b"1")
        cluster.inject_commit("hang-before")
        results = await asyncio.gather(*(put(store, b"k%d" % i, b"v") for i in range(50)), return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed and all(isinstance(f, RequestTimeoutError) for f in failed)
        # what succeeded has gap-free revisions right after the last good one
        assert sorted(r.header.revision for r in ok) == list(range(3, 3 + len(ok)))
        assert await revisions_logged(engine) == list(range(2, 3 + len(ok)))
        await close(engine, store)

    run(main())


def test_another_brain_writing_the_same_keyspace_is_caught_and_reloaded():
    async def main():
        cluster = FakeTikv()
        engine_a, a = await open_store(cluster)
        engine_b, b = await open_store(cluster)
        assert (await put(a, b"x", b"from a")).header.revision == 2
        # b's state is stale: its commit is refused, nothing written, and it reloads
        with pytest.raises(DomainError) as e:
            await put(b, b"x", b"from b")
        assert isinstance(e.value, RequestTimeoutError)
        assert b.rev == 2 and await value_of(b, b"x") == b"from a"
        assert (await put(b, b"y", b"from b")).header.revision == 3
        with pytest.raises(DomainError):
            await put(a, b"z", b"from a")
        assert a.rev == 3
        assert (await put(a, b"z", b"from a")).header.revision == 4
        assert await revisions_logged(engine_a) == [2, 3, 4]
        await close(engine_a, a)
        await close(engine_b, b)

    run(main())


def test_an_unknown_commit_racing_another_brain_for_the_same_revision():
    """The revision key holds this batch's revision, but another process
    wrote it: the versions tell the two apart."""

    async def main():
        cluster = FakeTikv()
        engine_a, a = await open_store(cluster)
        engine_b, b = await open_store(cluster)

        async def b_writes_first():
            await put(b, b"x", b"from b")  # revision 2, by b
            cluster.inject_commit("hang-before")  # for a's commit, which goes on after this

        cluster.before_commit = b_writes_first
        with pytest.raises(DomainError):
            await put(a, b"x", b"from a")  # a's revision 2 never lands
        assert a.rev == 2 and await value_of(a, b"x") == b"from b"
        assert (await put(a, b"x", b"a again")).header.revision == 3
        await close(engine_a, a)
        await close(engine_b, b)

    run(main())


def test_closing_while_the_outcome_is_unknown_fences_the_store():
    async def main():
        cluster = FakeTikv()
        engine, store = await open_store(cluster)
        await put(store, b"a", b"1")

        async def go_down():
            cluster.down = True

        cluster.inject_commit("undetermined-before")
        cluster.before_commit = go_down
        attempt = asyncio.ensure_future(put(store, b"b", b"2"))
        await asyncio.sleep(0.3)  # the writer is asking for the revision, in vain
        await asyncio.wait_for(store.close(), 10)  # closing does not hang on the dead cluster
        with pytest.raises(DomainError):
            await attempt
        assert store._fenced
        cluster.down = False
        await engine.close()

    run(main())


def test_a_fresh_brain_process_carries_on_from_the_same_tikv():
    """The revision, compact revision, keys and leases are all in TiKV: a
    process on another machine (a new client) takes over where the last
    one stopped, even one that died without closing anything."""
    cluster = FakeTikv()

    async def first_life():
        engine, store = await open_store(cluster)
        lessor = await Lessor.open(store)
        store.lease_exists = lessor.exists
        await lessor.grant(0x1234, 600)
        for i in range(5):
            await put(store, b"key", b"v%d" % i)
        await put(store, b"leased", b"x", lease=0x1234)
        await store.compact(4, physical=True)
        return store.rev  # and die: nothing is closed

    last = run(first_life())

    async def second_life():
        engine, store = await open_store(cluster)
        lessor = await Lessor.open(store)
        store.lease_exists = lessor.exists
        assert store.rev == last and store.compact_rev == 4
        assert await value_of(store, b"key") == b"v4"
        assert lessor.lookup(0x1234) is not None and list(await lessor.keys(0x1234)) == [b"leased"]
        assert (await put(store, b"key", b"next life")).header.revision == last + 1
        await lessor.stop()
        await close(engine, store)

    run(second_life())
