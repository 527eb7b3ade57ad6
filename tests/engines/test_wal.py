"""The LevelDB engine's write-ahead log (engines/wal.py).

A power failure cannot be made here, so the tests make its result: LevelDB's
files as they were at an earlier point (a copy taken then), beside the log as
it is now. LevelDB only loses what it had not synced, and the log keeps every
batch since its last checkpoint, so the reopened engine must hold every
batch that was written."""
from __future__ import annotations

import asyncio
import os
import shutil

from hypothesis import given, settings
from hypothesis import strategies as st

from engines.base import WriteBatch
from engines.leveldb import LevelDBEngine
from engines.wal import SEGMENT_NAMES, WriteAheadLog, decode_ops, encode_ops, read_run, records_to_replay

SEGMENT = 16 << 10

ops_strategy = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), st.one_of(st.none(), st.binary(max_size=300))), max_size=20
)


@given(ops_strategy)
def test_ops_encode_and_decode(ops):
    assert decode_ops(encode_ops(ops)) == ops


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.one_of(st.none(), st.binary(max_size=30))), max_size=3000),
       st.integers(0, 40_000))
def test_ops_too_long_for_a_limit_are_not_encoded(ops, limit):
    whole = encode_ops(ops)
    assert encode_ops(ops, limit) == (whole if len(whole) <= limit else None)


def _copy_leveldb_files(src: str, dst: str) -> None:
    os.makedirs(dst)
    for name in os.listdir(src):
        if name not in SEGMENT_NAMES and name != "LOCK":
            shutil.copy2(os.path.join(src, name), dst)


def _restore_leveldb_files(saved: str, path: str) -> None:
    """path's LevelDB files replaced by the saved ones; its log kept."""
    for name in os.listdir(path):
        if name not in SEGMENT_NAMES and name != "LOCK":
            os.remove(os.path.join(path, name))
    for name in os.listdir(saved):
        shutil.copy2(os.path.join(saved, name), path)


def _batch(ops) -> WriteBatch:
    return WriteBatch(list(ops))


async def _contents(eng: LevelDBEngine) -> dict[bytes, bytes]:
    return dict(await eng.scan(b"", None))


def _apply(model: dict[bytes, bytes], ops) -> None:
    for k, v in ops:
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


@settings(max_examples=25, deadline=None)
@given(
    st.lists(ops_strategy, min_size=1, max_size=40),
    st.lists(ops_strategy, min_size=1, max_size=30),
    st.booleans(),
)
def test_a_lost_leveldb_tail_is_replayed_from_the_log(tmp_path_factory, before, after, synced):
    """Batches written before a copy of LevelDB's files and after it (until
    the log would reuse a segment, so it still holds them all): with LevelDB
    rolled back to the copy, reopening gives every batch's effect."""
    base = tmp_path_factory.mktemp("wal")
    path, saved = str(base / "db"), str(base / "saved")
    model: dict[bytes, bytes] = {}

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        for ops in before:
            await eng.write(_batch(ops))
            _apply(model, ops)
        await eng.close()
        _copy_leveldb_files(path, saved)
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        # where the log writes (it starts segment 0 at an open); stop before
        # it would come back to segment 0 and overwrite what the copy lacks
        segment, pos = 0, 0
        for i, ops in enumerate(after):
            ops = ops + [(b"filler", b"%d" % i * 1000)]  # so that runs cross segments
            size = len(encode_ops(ops)) + 16
            if pos + size > SEGMENT:
                if segment == 1:
                    break
                segment, pos = 1, 0
            pos += size
            await eng.write(_batch(ops), sync=synced)
            _apply(model, ops)
        # the log as a crash here would leave it (a clean close checkpoints
        # and starts a fresh run, leaving nothing to replay)
        crashed = _segments(path)
        await eng.close()
        _restore_leveldb_files(saved, path)
        _restore_segments(crashed, path)
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        assert await _contents(eng) == model
        await eng.close()

    asyncio.run(go())


def _segments(path: str) -> dict[str, bytes]:
    out = {}
    for name in SEGMENT_NAMES:
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def _restore_segments(saved: dict[str, bytes], path: str) -> None:
    for name, data in saved.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)


def test_a_clean_close_leaves_nothing_to_replay(tmp_path):
    """After close, LevelDB holds every batch durably and the log's newest
    run is an empty barrier: the next open replays nothing, and the log's
    sequence numbers still go on from where they were."""
    path = str(tmp_path / "db")

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        for i in range(50):
            await eng.write(_batch([(b"k%d" % i, b"v" * 100)]))
        await eng.close()
        wal = WriteAheadLog(path, lambda: None, SEGMENT)
        try:
            assert wal.recover() == [[]]  # the barrier: no ops
            assert wal._seq > 50
        finally:
            wal.close()
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        assert len(await eng.scan(b"", None)) == 50
        await eng.close()

    asyncio.run(go())


def test_without_the_log_the_rollback_loses_writes(tmp_path):
    """The check above can fail: the same rollback with the log's segments
    removed loses the batches written after the copy."""
    path, saved = str(tmp_path / "db"), str(tmp_path / "saved")

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        await eng.write(_batch([(b"a", b"1")]))
        await eng.close()
        _copy_leveldb_files(path, saved)
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        await eng.write(_batch([(b"a", b"2"), (b"b", b"x")]))
        crashed = _segments(path)
        await eng.close()
        _restore_leveldb_files(saved, path)
        _restore_segments(crashed, path)
        kept = LevelDBEngine(path, wal_segment_size=SEGMENT, write_ahead_log=False)
        assert await _contents(kept) == {b"a": b"1"}
        await kept.close()
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        assert await _contents(eng) == {b"a": b"2", b"b": b"x"}
        await eng.close()

    asyncio.run(go())


def test_segments_are_reused_after_a_checkpoint(tmp_path):
    """Many segments' worth of writes: the log switches segments, checkpoints
    the one it left, and never grows past two segments."""
    path = str(tmp_path / "db")

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        for i in range(400):
            await eng.write(_batch([(b"k%d" % (i % 37), b"v%d" % i * 100)]))
        wal = eng._wal
        assert wal is not None and wal.checkpoints >= 8
        for name in SEGMENT_NAMES:
            assert os.path.getsize(os.path.join(path, name)) == SEGMENT
        # the database's size leaves the log out, like etcd's db size
        files = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
        assert eng.disk_size() == files - 2 * SEGMENT
        await eng.close()
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        expected = {b"k%d" % (i % 37): b"v%d" % i * 100 for i in range(400)}
        assert await _contents(eng) == expected
        await eng.close()

    asyncio.run(go())


def test_a_batch_too_large_for_a_segment_is_not_undone_by_a_replay(tmp_path):
    """A batch larger than a segment goes to LevelDB with its own sync; the
    logged batches before it must not be replayed over it at the next open."""
    path = str(tmp_path / "db")

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=4096)
        await eng.write(_batch([(b"k", b"old"), (b"other", b"1")]))
        before = eng.bytes_written
        await eng.write(_batch([(b"k", b"new"), (b"big", b"x" * 10_000), (b"other", None)]))
        assert eng._wal is not None and eng._wal.unlogged == 1
        assert eng.bytes_written - before == len(b"knew") + len(b"big") + 10_000 + len(b"other")
        await eng.write(_batch([(b"after", b"2")]))
        await eng.close()
        eng = LevelDBEngine(path, wal_segment_size=4096)
        assert await _contents(eng) == {b"k": b"new", b"big": b"x" * 10_000, b"after": b"2"}
        await eng.close()

    asyncio.run(go())


def test_a_batch_over_max_logged_bytes_is_not_logged(tmp_path):
    """A batch that fits a segment but is over max_logged_bytes goes to the
    engine's own sync, as one too large for a segment does; smaller ones
    before and after it are logged."""
    checkpoints = []
    wal = WriteAheadLog(str(tmp_path), lambda: checkpoints.append(1), segment_size=1 << 20, max_logged_bytes=4096)
    wal.recover()
    wal.start()
    assert wal.append([(b"a", b"x" * 1000)], True) is not None
    assert wal.append([(b"b", b"x" * 5000)], True) is None
    assert wal.unlogged == 1 and checkpoints  # what came before is made durable in the engine first
    assert wal.append([(b"c", b"x" * 1000)], True) is not None
    wal.close()


def _segment(path: str, i: int) -> bytes:
    with open(os.path.join(path, SEGMENT_NAMES[i]), "rb") as f:
        return f.read()


def test_a_torn_record_ends_the_replay(tmp_path):
    """A record whose bytes are not all on disk (a crash mid-write) and the
    records after it are not replayed; the ones before it are."""
    path, saved = str(tmp_path / "db"), str(tmp_path / "saved")

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        await eng.close()
        _copy_leveldb_files(path, saved)
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        for i in range(3):
            await eng.write(_batch([(b"k%d" % i, b"v%d" % i)]))
        crashed = _segments(path)
        await eng.close()
        _restore_segments(crashed, path)
        run = read_run(_segment(path, 0))
        assert [r.seq for r in run][-3:] == [run[-1].seq - 2, run[-1].seq - 1, run[-1].seq]
        torn = run[-2].offset + 20  # inside the second-to-last record
        with open(os.path.join(path, SEGMENT_NAMES[0]), "r+b") as f:
            f.seek(torn)
            f.write(b"\xff")
        _restore_leveldb_files(saved, path)
        eng = LevelDBEngine(path, wal_segment_size=SEGMENT)
        assert await _contents(eng) == {b"k0": b"v0"}
        await eng.close()

    asyncio.run(go())


def test_records_to_replay_joins_only_consecutive_runs(tmp_path):
    def log_with(seqs_per_segment):
        d = tmp_path / ("x%d" % len(list(tmp_path.iterdir())))
        d.mkdir()
        wal = WriteAheadLog(str(d), lambda: None, segment_size=4096)
        wal.recover()
        wal.start()
        runs = []
        for seg, seqs in enumerate(seqs_per_segment):
            wal._seg, wal._pos = seg, 0
            for seq in seqs:
                wal._seq = seq
                wal.append([(b"s", b"%d" % seq)], True)
            runs.append(read_run(os.pread(wal._fds[seg], 4096, 0)))
        wal.close()
        return [[int(decode_ops(r.payload)[0][1]) for r in runs_] for runs_ in [records_to_replay(runs)]][0]

    assert log_with([[1, 2, 3], []]) == [1, 2, 3]
    assert log_with([[7, 8], [4, 5, 6]]) == [4, 5, 6, 7, 8]
    assert log_with([[4, 5, 6], [7, 8]]) == [4, 5, 6, 7, 8]
    # a run that ends before a gap is older than a checkpoint: not replayed
    assert log_with([[4, 5], [7, 8]]) == [7, 8]
    # a reused segment: stale older records after the new ones end its run
    assert log_with([[9, 10, 3, 4], [5, 6, 7, 8]]) == [5, 6, 7, 8, 9, 10]


def test_undo_takes_back_the_last_record(tmp_path):
    wal = WriteAheadLog(str(tmp_path), lambda: None, segment_size=4096)
    wal.recover()
    wal.start()
    wal.append([(b"a", b"1")], True)
    mark = wal.append([(b"b", b"2")], True)
    assert mark is not None
    wal.undo(mark)
    wal.append([(b"c", b"3")], True)
    # what an open after a crash here would replay
    runs = [read_run(os.pread(fd, 4096, 0)) for fd in wal._fds]
    assert [decode_ops(r.payload) for r in records_to_replay(runs)] == [[(b"a", b"1")], [(b"c", b"3")]]
    wal.close()


def test_a_smaller_segment_size_still_replays_the_whole_log(tmp_path):
    """Segments written with a larger size are read whole at the next open."""
    path, saved = str(tmp_path / "db"), str(tmp_path / "saved")

    async def go():
        eng = LevelDBEngine(path, wal_segment_size=1 << 20)
        await eng.close()
        _copy_leveldb_files(path, saved)
        eng = LevelDBEngine(path, wal_segment_size=1 << 20)
        for i in range(40):
            await eng.write(_batch([(b"k%d" % i, b"v" * 1000)]))
        crashed = _segments(path)
        await eng.close()
        _restore_leveldb_files(saved, path)
        _restore_segments(crashed, path)
        eng = LevelDBEngine(path, wal_segment_size=4096)
        assert len(await _contents(eng)) == 40
        await eng.close()

    asyncio.run(go())
