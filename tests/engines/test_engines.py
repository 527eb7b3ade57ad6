"""Engine behaviour outside the conformance contract: the factory, LevelDB's
open errors and maintenance hooks, the memory engine's version pruning."""
from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc

import pytest

from engines import Engine, EngineError, EngineLockedError, WriteBatch, open_engine
from engines.memory import MemoryEngine


def run(coro):
    return asyncio.run(coro)


def _wb(*ops: tuple[bytes, bytes | None]) -> WriteBatch:
    return WriteBatch(list(ops))


def test_open_engine_factory(tmp_path):
    with pytest.raises(ValueError, match="data directory"):
        open_engine("leveldb")
    with pytest.raises(ValueError, match="unknown engine 'rocks'"):
        open_engine("rocks")
    with pytest.raises(ValueError, match="the tikv engine needs PD endpoints"):
        open_engine("tikv", data_dir=str(tmp_path))
    with pytest.raises(TypeError, match="no options"):
        open_engine("memory", cache=1)
    with pytest.raises(TypeError, match="bogus"):
        open_engine("leveldb", data_dir=str(tmp_path / "x"), bogus=1)
    mem = open_engine("memory", data_dir=str(tmp_path / "ignored"))
    assert isinstance(mem, Engine) and mem.durable is False
    assert not os.path.exists(tmp_path / "ignored")
    ldb = open_engine("leveldb", data_dir=str(tmp_path / "db"))
    assert isinstance(ldb, Engine) and ldb.durable is True
    run(ldb.close())


def test_leveldb_create_false_and_lock_in_process(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        open_engine("leveldb", data_dir=str(tmp_path / "missing"), create=False)
    path = str(tmp_path / "db")
    first = open_engine("leveldb", data_dir=path)
    with pytest.raises(EngineLockedError, match=f"data directory {path} is in use"):
        open_engine("leveldb", data_dir=path)
    run(first.close())
    again = open_engine("leveldb", data_dir=path, create=False)
    run(again.close())


def test_leveldb_disk_size_and_compaction(tmp_path):
    async def go():
        eng = open_engine("leveldb", data_dir=str(tmp_path / "db"))
        await eng.write(_wb(*((b"k%05d" % i, os.urandom(100)) for i in range(2000))))
        assert eng.disk_size() > 100_000
        await eng.compact_range()
        assert len(await eng.scan(b"", None, keys_only=True)) == 2000
        await eng.close()

    run(go())


def _traced() -> int:
    """Bytes Python holds now, as tracemalloc counts them."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.fixture
def traced():
    tracemalloc.start()
    yield _traced
    tracemalloc.stop()


def test_memory_prunes_versions_like_the_mvcc_layer_uses_it(traced):
    """One snapshot per commit, the previous one dropped without close():
    old versions and deleted keys do not pile up (the 1,800 writes after the
    first 200 replace 1 KB values and delete a key each: kept, they would
    hold about 2 MB)."""

    async def go():
        eng = MemoryEngine()
        snap = eng.snapshot()
        before = 0
        for i in range(2000):
            if i == 200:
                before = traced()
            await eng.write(_wb((b"k%d" % (i % 10), b"%04d" % i * 256), (b"tmp%d" % i, b"x"), (b"tmp%d" % (i - 1), None)))
            snap = eng.snapshot()  # the previous snapshot is dropped here
        assert traced() - before < 64 * 1024
        assert await snap.get(b"k9") == b"1999" * 256
        return eng

    run(go())


def test_memory_keeps_what_an_open_snapshot_needs(traced):
    """An open snapshot keeps the versions it reads (100 values of 10 KB
    here); once it is closed, the next write lets them go."""

    async def go():
        eng = MemoryEngine()
        await eng.write(_wb((b"a", b"0"), (b"gone", b"x")))
        empty = traced()
        held = eng.snapshot()
        await eng.write(_wb((b"gone", None)))
        for i in range(100):
            await eng.write(_wb((b"a", b"%05d" % (i + 1) * 2048)))
        assert await held.batch_get([b"a", b"gone"]) == [b"0", b"x"]
        assert traced() - empty > 100 * 10_000
        held.close()
        await eng.write(_wb((b"b", b"1")))
        assert traced() - empty < 2 * 10_240 + 4096
        assert await eng.batch_get([b"a", b"b", b"gone"]) == [b"00100" * 2048, b"1", None]
        del held
        gc.collect()

    run(go())


def test_memory_engine_warns_it_is_not_durable(caplog):
    with caplog.at_level("WARNING", logger="engines.memory"):
        MemoryEngine()
    assert "NOT durable" in caplog.text


def test_leveldb_syncs_inline_while_fast_and_on_its_thread_when_slow(tmp_path):
    """Synced writes run on the event loop while their moving average is
    below inline_sync_max, on the write thread once it is above, and come
    back inline when it falls; in every case in call order."""
    import asyncio

    from engines.base import WriteBatch
    from engines.leveldb import LevelDBEngine

    async def main():
        eng = LevelDBEngine(str(tmp_path / "db"), inline_sync_max=1.0)

        def batch(i: int) -> WriteBatch:
            wb = WriteBatch()
            wb.put(b"k", b"%d" % i)
            wb.put(b"k%d" % i, b"x")
            return wb

        await asyncio.gather(*(eng.write(batch(i)) for i in range(20)))
        assert (eng.synced_inline, eng.synced_on_thread) == (20, 0)
        assert eng.sync_seconds > 0.0

        eng.inline_sync_max = 0.0  # as if the disk had become slow
        await asyncio.gather(*(eng.write(batch(i)) for i in range(20, 40)))
        assert (eng.synced_inline, eng.synced_on_thread) == (20, 20)
        assert await eng.get(b"k") == b"39"  # the last one called is the last one applied

        eng.inline_sync_max = 1.0
        await eng.write(batch(40))
        assert eng.synced_inline == 21
        # commit_if sees what the thread and the inline writes wrote
        await eng.commit_if([(b"k", b"40")], batch(41))
        assert await eng.get(b"k41") == b"x"
        await eng.close()

    asyncio.run(main())


def test_leveldb_takes_a_write_of_very_many_ops_off_the_event_loop(tmp_path, monkeypatch):
    """A write of more than INLINE_MAX_OPS ops (a revoke or DeleteRange of
    many keys) is checked and applied on the write thread even while syncs
    are fast: its caller suspends, ordinary writes stay inline, call order
    holds across the two, and a bad op in a big batch is still a TypeError."""
    import asyncio

    from engines.base import WriteBatch
    from engines.leveldb import LevelDBEngine
    from engines.leveldb import engine as leveldb_engine

    monkeypatch.setattr(leveldb_engine, "INLINE_MAX_OPS", 50)

    def batch(n: int, value: bytes) -> WriteBatch:
        wb = WriteBatch()
        for i in range(n):
            wb.put(b"k%03d" % i, value)
        return wb

    async def main():
        eng = LevelDBEngine(str(tmp_path / "db"), inline_sync_max=1.0)
        with pytest.raises(StopIteration):  # at most INLINE_MAX_OPS: inline, no suspension
            eng.write(batch(50, b"small")).send(None)
        assert (eng.synced_inline, eng.synced_on_thread) == (1, 0)
        await eng.write(batch(51, b"big"))
        assert (eng.synced_inline, eng.synced_on_thread) == (1, 1)
        assert await eng.get(b"k000") == b"big" and await eng.get(b"k050") == b"big"
        # queued behind a big write, a small one is applied after it
        await asyncio.gather(eng.write(batch(51, b"first")), eng.write(batch(1, b"second")))
        assert await eng.get(b"k000") == b"second" and await eng.get(b"k001") == b"first"
        bad = batch(60, b"x")
        bad.ops.append((b"k", "not bytes"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await eng.write(bad)
        assert await eng.get(b"k") is None
        await eng.close()

    asyncio.run(main())


def test_leveldb_long_scans_read_past_the_block_cache(tmp_path):
    """A list page or a whole-range scan reads blocks once: it leaves
    LevelDB's block cache (which point reads use) as it was; a short scan
    and gets fill it. Seen through LevelDB's approximate-memory-usage, which
    counts the cache's blocks (and the memtables, flushed here first)."""
    from engines.leveldb import LevelDBEngine
    from engines.leveldb.reads import CACHED_SCAN_ITEMS

    async def main():
        # compressed blocks: the cache holds blocks LevelDB had to decompress
        # (others it reads in place from the mapped table file)
        eng = LevelDBEngine(str(tmp_path / "db"), compression="snappy")
        for i in range(0, 4000, 500):
            wb = WriteBatch()
            for j in range(i, i + 500):
                wb.put(b"k%05d" % j, b"x" * 500 + os.urandom(250).hex().encode())
            await eng.write(wb)
        await eng.compact_range()  # everything in table files, the memtable empty

        def usage() -> int:
            return int(eng._db.get_property(b"leveldb.approximate-memory-usage"))

        before = usage()
        snap = eng.snapshot()
        assert len(await snap.scan(b"k", b"l")) == 4000
        assert len(await snap.scan(b"k", b"l", limit=500)) == 500
        after_long = usage()
        assert len(await snap.scan(b"k02000", b"l", limit=CACHED_SCAN_ITEMS)) == CACHED_SCAN_ITEMS
        for j in range(0, 4000, 40):
            await snap.get(b"k%05d" % j)
        after_short = usage()
        snap.close()
        await eng.close()
        # 4 MB read by the long scans; a 16 KiB block or two may stay
        assert after_long - before < 64 << 10, (before, after_long)
        assert after_short - after_long > 1 << 20, (after_long, after_short)

    asyncio.run(main())
