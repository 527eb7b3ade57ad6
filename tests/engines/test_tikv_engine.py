"""The TiKV engine's own logic, over the tikv-client test double (FakeTikv):
key prefixes, scan pagination, write conflicts, commits with an unknown
outcome, retries, timestamps, unreachable clusters. The real client is used
where no server is needed: its API shape, and a PD that does not answer."""
from __future__ import annotations

import asyncio
import inspect
import socket
import time

import pytest
from tikv_double import FakeTikv

from engines import open_engine
from engines.base import (
    CommitUnknownError,
    ConflictError,
    EngineClosedError,
    EngineError,
    EngineUnavailableError,
    WriteBatch,
)
from engines.tikv import TikvEngine, open_tikv, parse_endpoints


def run(coro):
    return asyncio.run(coro)


def wb(*ops: tuple[bytes, bytes | None]) -> WriteBatch:
    return WriteBatch(list(ops))


async def engine_on(cluster: FakeTikv, prefix: bytes = b"t/", **options) -> TikvEngine:
    return await TikvEngine.open(cluster.client(), key_prefix=prefix, **options)


# -- key prefixes ------------------------------------------------------------------


def test_prefixes_keep_clusters_apart():
    async def main():
        cluster = FakeTikv()
        a = await engine_on(cluster, b"brain/a/")
        b = await engine_on(cluster, b"brain/b/")
        whole = await engine_on(cluster, b"")
        # neighbours of a's range on both sides, and keys sorting right after the prefix
        await whole.write(wb((b"brain/a", b"x"), (b"brain/a.", b"x"), (b"brain/a0", b"x"), (b"brain/\xff", b"x"), (b"a", b"x")))
        await a.write(wb((b"\x00", b"a0"), (b"k", b"a1"), (b"\xff\xff", b"a2")))
        await b.write(wb((b"k", b"b1")))
        assert await a.scan(b"", None) == [(b"\x00", b"a0"), (b"k", b"a1"), (b"\xff\xff", b"a2")]
        assert await a.scan(b"", None, reverse=True, limit=2) == [(b"\xff\xff", b"a2"), (b"k", b"a1")]
        assert await b.scan(b"", None) == [(b"k", b"b1")]
        assert await a.get(b"k") == b"a1" and await b.get(b"k") == b"b1"
        assert await b.batch_get([b"\x00", b"k"]) == [None, b"b1"]
        stored = dict(await cluster.raw())
        assert stored[b"brain/a/k"] == b"a1" and stored[b"brain/b/k"] == b"b1"
        assert stored[b"brain/a/\xff\xff"] == b"a2"
        # an engine without a prefix sees everyone's keys
        assert len(await whole.scan(b"", None)) == 9
        assert a.key_prefix == b"brain/a/"

    run(main())


def test_prefix_of_0xff_bytes_scans_to_the_end_of_the_keyspace():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, b"\xff\xff")
        await e.write(wb((b"a", b"1"), (b"\xff", b"2")))
        assert await e.scan(b"", None) == [(b"a", b"1"), (b"\xff", b"2")]

    run(main())


# -- pagination ----------------------------------------------------------------------


def _model(items, start, end, limit, reverse, keys_only):
    out = [(k, b"" if keys_only else v) for k, v in items if k >= start and (end is None or k < end)]
    if reverse:
        out.reverse()
    return out[:limit] if limit else out


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 256])
def test_scans_page_across_limits(page_size):
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, page_size=page_size)
        items = [(b"k%02d" % i, b"v%d" % i) for i in range(20)]
        await e.write(wb(*items))
        for start, end in ((b"", None), (b"k03", b"k17"), (b"k05", b"k06"), (b"k19", None), (b"z", None)):
            for limit in (0, 1, 2, 3, 4, 6, 7, 19, 20, 21):
                for reverse in (False, True):
                    for keys_only in (False, True):
                        got = await e.scan(start, end, limit=limit, reverse=reverse, keys_only=keys_only)
                        assert got == _model(items, start, end, limit, reverse, keys_only), (start, end, limit, reverse, keys_only)
        # every request asked for at least one key and at most a page
        assert cluster.scan_limits and all(1 <= n <= page_size for n in cluster.scan_limits)

    run(main())


def test_a_scan_reads_only_the_pages_it_needs():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, page_size=3)
        await e.write(wb(*((b"k%02d" % i, b"v") for i in range(20))))
        cluster.scan_limits.clear()
        await e.scan(b"", None)
        assert cluster.scan_limits == [3] * 7  # 6 full pages, then a short one ends it
        cluster.scan_limits.clear()
        assert len(await e.scan(b"", None, limit=4)) == 4
        assert cluster.scan_limits == [3, 1]  # the last page asks only for what is missing
        cluster.scan_limits.clear()
        assert len(await e.scan(b"", None, limit=6)) == 6
        assert cluster.scan_limits == [3, 3]

    run(main())


def test_batch_get_pages_dedupes_and_keeps_order():
    async def main():
        cluster = FakeTikv(seed=3)
        e = await engine_on(cluster, page_size=2)
        await e.write(wb(*((b"k%d" % i, b"v%d" % i) for i in range(9)), (b"empty", b"")))
        keys = [b"k8", b"nope", b"k1", b"k1", b"empty", b"k0", b"k5", b"k3", b"k8"]
        want = [b"v8", None, b"v1", b"v1", b"", b"v0", b"v5", b"v3", b"v8"]
        assert await e.batch_get(keys) == want
        assert await e.snapshot().batch_get(keys) == want
        assert await e.batch_get([]) == []

    run(main())


def test_responses_over_the_client_limit_are_asked_for_in_smaller_pages():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, page_size=8)
        big = [(b"big%d" % i, bytes([i]) * 1000) for i in range(8)]
        await e.write(wb(*big))
        cluster.max_response_bytes = 2500  # two values fit, three do not
        cluster.scan_limits.clear()
        assert await e.scan(b"", None) == big
        assert cluster.scan_limits[:3] == [8, 4, 2]
        assert await e.scan(b"", None, reverse=True, limit=3) == big[::-1][:3]
        assert await e.batch_get([k for k, _ in big]) == [v for _, v in big]
        cluster.max_response_bytes = 500  # not even one value fits
        with pytest.raises(EngineError, match="single value"):
            await e.scan(b"", None)
        with pytest.raises(EngineError, match="single value"):
            await e.batch_get([b"big1"])

    run(main())


# -- snapshots and timestamps ----------------------------------------------------


def test_snapshots_read_at_the_newest_timestamp_the_engine_holds():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster)
        other = await engine_on(cluster)  # another process on the same prefix
        await e.write(wb((b"a", b"1")))
        s1 = e.snapshot()
        assert await s1.get(b"a") == b"1"  # a snapshot sees the engine's own writes
        await e.write(wb((b"a", b"2")))
        assert await s1.get(b"a") == b"1"  # and nothing after it was taken
        await other.write(wb((b"a", b"3")))
        # a snapshot is at the newest timestamp this engine has: the other
        # process's write comes later, so it is not seen...
        assert await e.snapshot().get(b"a") == b"2"
        # ...until this engine reads the latest state, which moves it on
        assert await e.get(b"a") == b"3"
        assert await e.snapshot().get(b"a") == b"3"
        assert s1.timestamp < e.read_ts

    run(main())


# -- writes, conflicts, unknown outcomes ---------------------------------------------


def test_commit_if_compares_and_writes_atomically():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster)
        await e.commit_if([(b"rev", None)], wb((b"rev", b"1"), (b"x", b"a")))
        with pytest.raises(ConflictError):
            await e.commit_if([(b"rev", None)], wb((b"rev", b"2"), (b"x", b"b")))
        with pytest.raises(ConflictError):
            await e.commit_if([(b"rev", b"1"), (b"other", b"")], wb((b"x", b"b")))
        assert await e.batch_get([b"rev", b"x"]) == [b"1", b"a"]
        commits = cluster.calls["commit"]
        with pytest.raises(ConflictError):
            await e.commit_if([(b"rev", b"9")], wb((b"x", b"c")))
        assert cluster.calls["commit"] == commits  # a failed comparison never reaches commit
        await e.commit_if([(b"rev", b"1"), (b"gone", None)], wb((b"x", b"c")))
        assert await e.get(b"x") == b"c"
        assert cluster.leaked == 0  # every transaction was committed or rolled back

    run(main())


def test_a_change_after_the_comparison_is_a_conflict_never_an_overwrite():
    """Another client changes an expected key between commit_if's read and
    its commit: TiKV's prewrite finds the newer write; nothing is written."""

    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster)
        rival = await engine_on(cluster)
        await e.write(wb((b"rev", b"1"), (b"guard", b"g1")))

        async def rival_writes():
            await rival.write(wb((b"guard", b"g2")))

        # the expected key is not written by the batch: it is locked, so its change is caught too
        cluster.before_commit = rival_writes
        with pytest.raises(ConflictError, match="write conflict"):
            await e.commit_if([(b"guard", b"g1")], wb((b"data", b"mine")))
        assert await e.batch_get([b"guard", b"data"]) == [b"g2", None]

        async def rival_bumps():
            await rival.write(wb((b"rev", b"2")))

        cluster.before_commit = rival_bumps
        with pytest.raises(ConflictError):
            await e.commit_if([(b"rev", b"1")], wb((b"rev", b"2"), (b"data", b"mine")))
        assert await e.batch_get([b"rev", b"data"]) == [b"2", None]
        assert cluster.calls["rollback"] == 2  # a conflicted prewrite is rolled back at once
        assert cluster.leaked == 0

    run(main())


def test_blind_writes_retry_conflicts_then_give_up():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, write_retries=2)
        cluster.inject_commit("conflict", "conflict")
        await e.write(wb((b"k", b"1")))  # two conflicts, third try lands
        assert await e.get(b"k") == b"1"
        assert cluster.calls["begin"] == 3
        cluster.inject_commit("conflict", "conflict", "conflict")
        with pytest.raises(ConflictError, match="3 tries"):
            await e.write(wb((b"k", b"2")))
        assert await e.get(b"k") == b"1"
        # a conditional commit is never retried: its caller decides
        cluster.inject_commit("conflict")
        with pytest.raises(ConflictError):
            await e.commit_if([(b"k", b"1")], wb((b"k", b"3")))
        assert await e.get(b"k") == b"1"

    run(main())


@pytest.mark.parametrize(
    "fault, applied",
    [
        ("undetermined-before", False),
        ("undetermined-after", True),
        ("hang-before", False),  # no answer: the engine's commit timeout fires
        ("hang-after", True),
        ("region-error", False),
    ],
)
def test_commits_with_an_unknown_outcome(fault, applied):
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, commit_timeout=0.2)
        await e.write(wb((b"k", b"old")))
        cluster.inject_commit(fault)
        started = time.monotonic()
        with pytest.raises(CommitUnknownError, match="may or may not"):
            await e.commit_if([(b"k", b"old")], wb((b"k", b"new"), (b"other", b"x")))
        assert time.monotonic() - started < 5
        want = [b"new", b"x"] if applied else [b"old", None]
        assert await e.batch_get([b"k", b"other"]) == want  # all or nothing
        # never rolled back: that could tear a transaction whose primary committed
        assert cluster.calls["rollback"] == 0
        # the engine goes on working
        await e.write(wb((b"after", b"1")))
        assert await e.get(b"after") == b"1"

    run(main())


def test_a_commit_that_landed_but_left_no_timestamp_is_reported_unknown():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster)

        async def pd_goes_down():
            cluster.down = True

        cluster.after_commit = pd_goes_down
        with pytest.raises(CommitUnknownError, match="committed"):
            await e.write(wb((b"k", b"1")))
        cluster.down = False
        assert await e.get(b"k") == b"1"
        assert await e.snapshot().get(b"k") == b"1"

    run(main())


def test_unreachable_cluster_and_closed_engine():
    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster)
        await e.write(wb((b"k", b"1")))
        snap = e.snapshot()
        cluster.down = True
        for _what, call in (
            ("get", lambda: e.get(b"k")),
            ("scan", lambda: e.scan(b"", None)),
            ("write", lambda: e.write(wb((b"k", b"2")))),
            ("commit_if", lambda: e.commit_if([(b"k", b"1")], wb((b"k", b"2")))),
            ("snapshot get", lambda: snap.get(b"k")),
        ):
            with pytest.raises(EngineUnavailableError, match="Unavailable"):
                await call()
        cluster.down = False
        cluster.fail_reads(1)
        with pytest.raises(EngineUnavailableError):
            await snap.scan(b"", None)
        assert await snap.scan(b"", None) == [(b"k", b"1")]
        assert await e.get(b"k") == b"1"  # nothing was written while down
        assert cluster.leaked == 0
        await e.close()
        await e.close()
        with pytest.raises(EngineClosedError):
            await e.get(b"k")
        with pytest.raises(EngineClosedError):
            e.snapshot()
        with pytest.raises(EngineClosedError):
            await snap.get(b"k")

    run(main())


# -- opening ---------------------------------------------------------------------


def test_open_tikv_connects_checks_options_and_explains_failures():
    cluster = FakeTikv()
    e = open_tikv(pd_endpoints="pd1:2379, pd2:2379", key_prefix="c1/", connector=cluster.connect, page_size=5)
    assert e.key_prefix == b"c1/" and e.where == "TiKV of PD pd1:2379,pd2:2379"
    run(e.write(wb((b"k", b"1"))))  # usable from another event loop than the one it connected on
    assert run(e.get(b"k")) == b"1"
    with pytest.raises(ValueError, match="needs PD endpoints"):
        open_tikv(pd_endpoints=" , ", connector=cluster.connect)
    with pytest.raises(TypeError, match="bogus"):
        open_tikv(pd_endpoints="pd:2379", connector=cluster.connect, bogus=1)
    with pytest.raises(ValueError, match="page_size"):
        open_tikv(pd_endpoints="pd:2379", connector=cluster.connect, page_size=0)
    cluster.down = True
    with pytest.raises(EngineUnavailableError, match="cannot reach TiKV through PD pd:2379: .*PD cluster failed to respond"):
        open_tikv(pd_endpoints="pd:2379", connector=cluster.connect)
    cluster.down = False
    cluster.connect_hangs = True
    with pytest.raises(EngineUnavailableError, match="did not answer within 0.2s"):
        open_tikv(pd_endpoints="pd:2379", connector=cluster.connect, connect_timeout=0.2)
    assert parse_endpoints(["a:1", " b:2 "]) == ["a:1", "b:2"]


def test_open_tikv_works_inside_a_running_event_loop():
    """brain serve opens its engine from inside its event loop."""

    async def main():
        cluster = FakeTikv()
        e = open_tikv(pd_endpoints="pd:2379", connector=cluster.connect)
        await e.write(wb((b"k", b"1")))
        assert await e.snapshot().get(b"k") == b"1"

    run(main())


# -- the real tikv-client, where no server is needed ----------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_client_unreachable_pd_is_a_clear_error():
    pytest.importorskip("tikv_client")
    endpoint = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match=f"cannot reach TiKV .*PD {endpoint}"):
        open_engine("tikv", pd_endpoints=[endpoint], connect_timeout=20)
    assert time.monotonic() - started < 20


def test_the_double_has_the_real_clients_shape():
    """The parts of tikv_client.asynchronous that the engine calls exist with
    the parameters the double (and so the engine's tests) assume."""
    asynchronous = pytest.importorskip("tikv_client.asynchronous")
    from tikv_double import FakeSnapshot, FakeTransaction, FakeTransactionClient

    pairs = [
        (asynchronous.TransactionClient, FakeTransactionClient, ("begin", "current_timestamp", "snapshot")),
        (asynchronous.Snapshot, FakeSnapshot, ("get", "batch_get", "scan", "scan_keys")),
        (asynchronous.Transaction, FakeTransaction, ("batch_get", "lock_keys", "put", "delete", "commit", "rollback")),
    ]
    for real, fake, methods in pairs:
        for name in methods:
            real_params = list(inspect.signature(getattr(real, name)).parameters)
            fake_params = list(inspect.signature(getattr(fake, name)).parameters)
            assert real_params == fake_params, (real.__name__, name, real_params, fake_params)
            assert inspect.iscoroutinefunction(getattr(real, name)) == inspect.iscoroutinefunction(getattr(fake, name)), name
    assert inspect.iscoroutinefunction(asynchronous.TransactionClient.connect)


def test_reads_wait_for_locks_to_be_settled():
    """A key locked by a transaction whose writer died stays locked until the
    lock's time-to-live ends; the client gives up sooner, the engine waits."""

    async def main():
        cluster = FakeTikv()
        e = await engine_on(cluster, request_timeout=2)
        await e.write(wb((b"k", b"1")))
        cluster.fail_reads(3, locked=True)
        assert await e.get(b"k") == b"1"
        cluster.fail_reads(3, locked=True)
        assert await e.snapshot().scan(b"", None) == [(b"k", b"1")]
        cluster.fail_reads(3, locked=True)
        await e.commit_if([(b"k", b"1")], wb((b"k", b"2")))
        assert await e.get(b"k") == b"2"
        cluster.fail_reads(1000, locked=True)  # never settles: give up after request_timeout
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="locked"):
            await e.get(b"k")
        assert 1.5 < time.monotonic() - started < 4
        cluster.fail_reads(0)
        cluster.fail_reads(1)  # other failures are not waited on
        with pytest.raises(EngineUnavailableError):
            await e.get(b"k")

    run(main())
