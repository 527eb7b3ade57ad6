"""The MVCC store in-process, on every engine: group commit, gap-free
revisions, compaction that really prunes, and compaction resumed after a crash."""
from __future__ import annotations

import asyncio

import pytest

from brain.errors import DomainError, RequestTimeoutError
from brain.lease.errors import LeaseNotFoundError
from brain.mvcc.errors import CompactedError, WriteFailedError
from brain.apply.txn import apply_put, apply_txn
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from engines import open_engine
from engines.base import EngineError, WriteBatch


@pytest.fixture(params=["leveldb", "memory"])
def engine_factory(request, tmp_path):
    def make():
        return open_engine(request.param, data_dir=str(tmp_path / "data"))

    return make


def run(coro):
    return asyncio.run(coro)


async def put(store: MVCCStore, key: bytes, value: bytes) -> pb.PutResponse:
    req = pb.PutRequest(key=key, value=value)
    return await store.write(lambda txn: apply_put(txn, req))


async def history_count(engine, key: bytes) -> int:
    p = K.history_prefix(key)
    return len(await engine.scan(p, p + b"\xff" * 9, keys_only=True))


def test_concurrent_writes_are_group_committed(engine_factory):
    async def main():
        engine = engine_factory()
        store = await MVCCStore.open(engine)
        resps = await asyncio.gather(*(put(store, b"k", b"%d" % i) for i in range(300)))
        revs = sorted(r.header.revision for r in resps)
        assert revs == list(range(2, 302))  # one revision each, no gap
        assert store.batches < 300  # many requests shared one commit
        rr = await store.view.range(b"k", None)
        kv = pb.RangeResponse().kvs.add()
        kv.MergeFromString(rr.kvs[0])
        assert kv.version == 300 and kv.create_revision == 2 and kv.mod_revision == 301
        await store.close()
        await engine.close()

    run(main())


def test_failed_compare_and_failed_request_consume_no_revision(engine_factory):
    async def main():
        engine = engine_factory()
        store = await MVCCStore.open(engine)
        await put(store, b"a", b"1")
        cmp = pb.Compare(key=b"a", target=pb.Compare.MOD, mod_revision=99)
        t = pb.TxnRequest(compare=[cmp], success=[pb.RequestOp(request_put=pb.PutRequest(key=b"a", value=b"x"))])
        bad = pb.PutRequest(key=b"b", value=b"x", lease=42)  # unknown lease
        r1, r2, r3 = await asyncio.gather(
            store.write(lambda txn: apply_txn(txn, t)),
            store.write(lambda txn: apply_put(txn, bad)),
            put(store, b"c", b"1"),
            return_exceptions=True,
        )
        assert r1.succeeded is False and r1.header.revision == 2
        assert isinstance(r2, LeaseNotFoundError)
        assert r3.header.revision == 3
        await store.close()
        await engine.close()

    run(main())


def test_compaction_prunes_history_and_keeps_what_reads_need(engine_factory):
    async def main():
        engine = engine_factory()
        store = await MVCCStore.open(engine)
        for i in range(100):
            await put(store, b"k", b"%d" % i)  # revisions 2..101
        await put(store, b"gone", b"x")  # 102
        await store.write(lambda txn: txn.delete_range(b"gone", None))  # 103
        assert await history_count(engine, b"k") == 100
        await store.compact(60, physical=True)
        # versions 2..59 pruned; 60 stays (visible at 60), 61..101 stay
        assert await history_count(engine, b"k") == 42
        assert await history_count(engine, b"gone") == 2  # newer than 60: kept
        with pytest.raises(DomainError) as e:
            await store.view.range(b"k", None, rev=59)
        assert isinstance(e.value, CompactedError)
        rr = await store.view.range(b"k", None, rev=60)
        assert len(rr.kvs) == 1
        await store.compact(103, physical=True)
        assert await history_count(engine, b"gone") == 0  # tombstone at/below: gone
        assert await history_count(engine, b"k") == 1
        log = await engine.scan(K.EVENTS, K.EVENTS_END, keys_only=True)
        assert [K.unpack_rev(k[1:])[0] for k, _ in log] == [103]
        with pytest.raises(DomainError) as e:
            await store.compact(103, physical=False)
        assert isinstance(e.value, CompactedError)
        await store.close()
        await engine.close()

    run(main())


def test_interrupted_compaction_resumes_on_open(tmp_path):
    async def main():
        engine = open_engine("leveldb", data_dir=str(tmp_path / "d"))
        store = await MVCCStore.open(engine)
        for i in range(50):
            await put(store, b"k", b"%d" % i)
        await store.close()
        # a compaction that was scheduled, then the process died
        wb = WriteBatch()
        wb.put(K.META_COMPACT_SCHEDULED, K.pack_rev(40))
        await engine.write(wb)
        await engine.close()

        engine = open_engine("leveldb", data_dir=str(tmp_path / "d"))
        store = await MVCCStore.open(engine)
        assert store.compact_rev == 40
        await store.compactor.wait(40)
        assert await history_count(engine, b"k") == 12  # revisions 40..51
        assert store.rev == 51
        await store.close()
        await engine.close()

    run(main())


def test_failed_engine_write_fails_the_batch_and_the_writer_goes_on():
    async def main():
        engine = open_engine("memory")
        store = await MVCCStore.open(engine)
        # the writer's call on an engine with ordered_writes
        real_write = engine.commit_snapshot
        calls = {"n": 0}

        async def failing_write(expect, wb, sync=True):
            calls["n"] += 1
            if calls["n"] == 1:
                from engines.base import EngineError

                raise EngineError("injected")
            return await real_write(expect, wb, sync=sync)

        engine.commit_snapshot = failing_write
        with pytest.raises(DomainError) as e:
            await put(store, b"a", b"1")
        assert isinstance(e.value, RequestTimeoutError)
        assert store.rev == 1  # nothing consumed
        r = await put(store, b"a", b"2")  # the writer still serves
        assert r.header.revision == 2
        await store.close()
        await engine.close()

    run(main())


def test_a_bug_under_the_writer_is_no_timeout_and_is_logged_once(caplog):
    """Each request of a batch a bug failed gets its own WriteFailedError
    with the bug's text (answered UNKNOWN, as etcd answers an error it has
    no status for), not "request timed out", which would send clients
    retrying into the bug; the bug is logged once, with its traceback."""
    async def main():
        engine = open_engine("memory")
        store = await MVCCStore.open(engine)
        # the writer's call on an engine with ordered_writes
        real_write = engine.commit_snapshot
        calls = {"n": 0}

        async def buggy_write(expect, wb, sync=True):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected bug")
            return await real_write(expect, wb, sync=sync)

        engine.commit_snapshot = buggy_write
        got = await asyncio.gather(put(store, b"a", b"1"), put(store, b"b", b"1"), return_exceptions=True)
        assert all(isinstance(g, WriteFailedError) and str(g) == "RuntimeError: injected bug" for g in got), got
        assert got[0] is not got[1]
        assert store.rev == 1  # nothing consumed
        r = await put(store, b"a", b"2")  # the writer still serves
        assert r.header.revision == 2
        await store.close()
        await engine.close()

    with caplog.at_level("ERROR"):
        run(main())
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError, caplog.text


def test_a_long_compaction_logs_its_progress(tmp_path, monkeypatch, caplog):
    from brain.mvcc import compactor

    monkeypatch.setattr(compactor, "CHUNK_REVISIONS", 100)
    monkeypatch.setattr(compactor, "PROGRESS_EVERY_S", 0.0)

    async def main():
        engine = open_engine("memory")
        store = await MVCCStore.open(engine)
        for i in range(300):
            await put(store, b"k%d" % (i % 7), b"%d" % i)  # revisions 2..301
        with caplog.at_level("INFO", logger="brain.mvcc.compactor"):
            await store.compact(301, physical=True)
        await store.close()
        await engine.close()

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "brain.mvcc.compactor"]
    progress = [m for m in lines if "revisions done" in m]
    assert progress[0].startswith("compaction to 301: 100 of 301 revisions done (33%)"), lines
    assert lines[-1] == "compaction at 301 finished"


def _slow_next_commit(engine, fail: bool) -> list[bool]:
    """Make the LevelDB engine's next commit take 0.3 s (and fail, with
    fail); returns the conditional flags of its commits from now on."""
    import time

    from engines.base import EngineError

    real = engine._commit_locked
    calls: list[bool] = []

    def slow_once(expect, ops, sync):  # on the engine's write thread
        calls.append(bool(expect))
        if len(calls) == 1:
            time.sleep(0.3)
            if fail:
                raise EngineError("injected: disk write failed")
        return real(expect, ops, sync)

    engine._commit_locked = slow_once
    return calls


async def _store_syncing_on_thread(tmp_path) -> tuple:
    engine = open_engine("leveldb", data_dir=str(tmp_path / "db"), inline_sync_max=0.0)
    return engine, await MVCCStore.open(engine)


def test_requests_arriving_during_a_commit_share_the_next_one(tmp_path):
    """Group commit: every request that arrives while a commit is in flight
    is applied to the one open batch, committed in one engine write once
    that commit is done; each still gets its own revision."""

    async def main():
        engine, store = await _store_syncing_on_thread(tmp_path)
        calls = _slow_next_commit(engine, fail=False)
        first = asyncio.ensure_future(put(store, b"a", b"1"))
        await asyncio.sleep(0.1)  # the first batch is being written
        rest = []
        for i in range(10):  # one at a time, each applied before the next arrives
            rest.append(asyncio.ensure_future(put(store, b"k%d" % i, b"v")))
            await asyncio.sleep(0.005)
        assert not first.done() and not any(r.done() for r in rest)
        got = await asyncio.gather(first, *rest)
        assert [r.header.revision for r in got] == list(range(2, 13))
        assert len(calls) == 2 and store.batches == 2
        assert (await store.view.range(b"a", b"z")).count == 11
        await store.close()
        await engine.close()

    run(main())


def test_a_batch_built_on_a_failed_write_fails_too(tmp_path):
    """A batch opened while the write before it is in flight is built on
    that write's changes: when the write fails, the batch fails without
    reaching the engine, and the next request gets the revision the failed
    ones did not use."""

    async def main():
        engine, store = await _store_syncing_on_thread(tmp_path)
        calls = _slow_next_commit(engine, fail=True)
        first = asyncio.ensure_future(put(store, b"a", b"1"))
        await asyncio.sleep(0.1)  # the first batch is being written
        second = asyncio.ensure_future(put(store, b"b", b"2"))
        got = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(got[0], RequestTimeoutError) and isinstance(got[1], RequestTimeoutError), got
        assert calls == [False]
        third = await put(store, b"c", b"3")
        assert third.header.revision == 2
        rr = await store.view.range(b"a", b"z")
        assert rr.count == 1 and store.rev == 2
        await store.close()
        await engine.close()

    run(main())


def test_a_full_batch_queued_behind_a_failed_write_fails_too(tmp_path, monkeypatch):
    """On LevelDB a batch that fills while the write before it is in flight
    is handed to the engine at once, queued behind that write and
    conditional on the revision key: when the first write fails, the one
    queued behind it fails too."""
    from brain.mvcc import writer

    monkeypatch.setattr(writer, "MAX_BATCH", 4)

    async def main():
        engine, store = await _store_syncing_on_thread(tmp_path)
        calls = _slow_next_commit(engine, fail=True)
        first = asyncio.ensure_future(put(store, b"a", b"1"))
        await asyncio.sleep(0.1)  # the first batch is being written
        full = [asyncio.ensure_future(put(store, b"k%d" % i, b"v")) for i in range(4)]
        got = await asyncio.gather(first, *full, return_exceptions=True)
        assert all(isinstance(g, RequestTimeoutError) for g in got), got
        assert calls == [False, True]  # the full batch went to the engine queued, conditional
        third = await put(store, b"c", b"3")
        assert third.header.revision == 2
        await store.close()
        await engine.close()

    run(main())


def test_a_batch_of_very_many_changes_is_encoded_in_slices():
    """The engine records of a huge revision (one DeleteRange or lease revoke
    over many keys), its revision log record of all its keys included, are
    encoded a slice per turn of the loop, and are the very records
    encode_batch gives in one go."""
    from brain.mvcc.kv import Change
    from brain.mvcc.writer import ENCODE_SLICE, _encode_in_slices

    n = ENCODE_SLICE * 3 + 17
    changes = []
    for i in range(n):
        key = b"k%06d" % i
        kind = i % 3
        if kind == 0:  # a create with a lease
            changes.append(Change(10 + i // 1000, key, b"kv", None, False, lease=7))
        elif kind == 1:  # an update that drops its lease
            changes.append(Change(10 + i // 1000, key, b"kv2", b"old", False, prev_lease=7, prev_rev=3))
        else:  # a delete
            changes.append(Change(10 + i // 1000, key, b"tomb", b"old", True, prev_rev=4))
    rev = changes[-1].rev

    async def main() -> tuple[list, int]:
        turns = 0
        done = False

        async def count() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)
        counter = asyncio.ensure_future(count())
        await asyncio.sleep(0)
        wb = await _encode_in_slices(changes, rev)
        done = True
        await counter
        return wb.ops, turns

    ops, turns = asyncio.run(main())
    assert ops == K.encode_batch(changes, rev).ops
    # a turn per slice of changes, and per slice of each revision's key list
    revs = {c.rev for c in changes}
    assert len(revs) == 4
    assert turns >= -(-n // ENCODE_SLICE) + len(revs)


def test_a_huge_batch_writes_copies_of_committed_versions_ahead(monkeypatch):
    """The copies of replaced versions committed at or below the committed
    revision go to the engine in chunks of their own, before the batch; the
    rest (copies of versions the batch itself or one in flight wrote
    included) stays in the batch, whose records are otherwise those of
    encode_batch. A chunk whose write fails goes back into the batch."""
    from brain.mvcc import copy_ahead
    from brain.mvcc.copy_ahead import CopyAhead
    from brain.mvcc.kv import Change
    from brain.mvcc.writer import ENCODE_SLICE, _encode_in_slices

    monkeypatch.setattr(copy_ahead, "CHUNK", 1000)
    n = ENCODE_SLICE * 4
    changes = [
        Change(20, b"k%06d" % i, b"tomb", b"old%d" % i, True, prev_rev=3 + i % 3)
        for i in range(n)
    ]
    committed = 4  # versions at revision 5 are in flight: never copied ahead
    full = K.encode_batch(changes, 20).ops
    ahead = [(K.history_key(c.key, c.prev_rev), c.prev) for c in changes if c.prev_rev <= committed]
    rest = [op for op in full if op not in set(ahead)]
    assert ahead and len(rest) == len(full) - len(ahead)

    async def main(fail_chunk: int) -> tuple[list, list]:
        chunks: list = []

        async def write(chunk: WriteBatch) -> None:
            chunks.append(list(chunk.ops))
            await asyncio.sleep(0)
            if len(chunks) == fail_chunk:
                raise EngineError("disk trouble")

        wb = await _encode_in_slices(changes, 20, CopyAhead(write, committed))
        return chunks, wb.ops

    chunks, ops = asyncio.run(main(0))
    assert [op for chunk in chunks for op in chunk] == ahead
    assert len(chunks) > 1 and all(len(chunk) < copy_ahead.CHUNK + ENCODE_SLICE for chunk in chunks)
    assert ops == rest
    chunks, ops = asyncio.run(main(2))
    assert ops == chunks[1] + rest
