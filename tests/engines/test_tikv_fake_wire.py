"""TiKV's transaction rules, as the fake PD + TiKV enforces them, checked
request by request over the wire (tests/tikv_fake/wire.py), below
tikv-client: conflicts, locks and their TTL, rollback protection, lock
resolution, heartbeats, the timestamp oracle, and persistence across the
fake's own SIGKILL. The rules are TiKV's (Percolator as in TiKV's
storage/txn/actions: prewrite, commit, cleanup, check_txn_status).

Needs only grpcio (no tikv-client): the fake is driven directly.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from tikv_fake.pb import kvrpcpb_pb2 as kvrpcpb
from tikv_fake.process import FakeTikvProcess, fake_unavailable, start_fake
from tikv_fake.tso import physical_of
from tikv_fake.wire import Wire

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTikvProcess]:
    if (why := fake_unavailable()) is not None:
        pytest.skip(why)
    proc = start_fake(Path(tmp_path_factory.mktemp("fake-wire")))
    yield proc
    proc.stop()


@pytest.fixture
def wire(fake: FakeTikvProcess) -> Iterator[Wire]:
    w = Wire(fake.pd_endpoint, fake.tikv_endpoint)
    yield w
    w.close()


def test_generated_modules_are_current():
    pytest.importorskip("grpc_tools")
    done = subprocess.run([sys.executable, str(ROOT / "proto" / "tikv" / "generate.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_tso_batches_are_increasing_wall_clock_and_echo_count(wire):
    first = wire.tso_batch(5)
    assert first.count == 5 and first.timestamp.logical >= 5  # the last of the batch
    assert abs(first.timestamp.physical - time.time() * 1000) < 5000
    assert wire.ts() > (first.timestamp.physical << 18 | first.timestamp.logical)


def test_reads_see_only_commits_at_or_before_their_timestamp(wire):
    before = wire.ts()
    c1 = wire.put(b"si/k", b"v1")
    middle = wire.ts()
    wire.put(b"si/k", b"v2")
    assert wire.get(b"si/k", before).not_found
    assert wire.get(b"si/k", c1).value == b"v1"  # a read at the commit_ts sees it
    assert wire.get(b"si/k", middle).value == b"v1"
    assert wire.get(b"si/k", wire.ts()).value == b"v2"
    wire.put(b"si/k", None)
    assert wire.get(b"si/k", wire.ts()).not_found
    assert wire.get(b"si/k", middle).value == b"v1"  # old versions stay readable


def test_prewrite_below_a_newer_commit_is_a_write_conflict(wire):
    loser = wire.ts()
    winner = wire.ts()
    assert wire.prewrite({b"wc/k": b"w"}, b"wc/k", winner) == []
    commit = wire.ts()
    assert not wire.commit([b"wc/k"], winner, commit).HasField("error")
    errors = wire.prewrite({b"wc/k": b"l", b"wc/other": b"l"}, b"wc/other", loser)
    assert len(errors) == 1 and errors[0].HasField("conflict")
    c = errors[0].conflict
    # conflict_ts is the winner's start_ts; conflict_commit_ts its commit_ts
    assert (c.start_ts, c.conflict_ts, c.conflict_commit_ts, c.key) == (loser, winner, commit, b"wc/k")
    assert c.reason == kvrpcpb.WriteConflict.Optimistic
    # nothing of the failed prewrite stays locked
    assert not wire.get(b"wc/other", wire.ts()).HasField("error")
    assert wire.prewrite({b"wc/k": b"later"}, b"wc/k", wire.ts()) == []  # a later start_ts may


def test_a_lock_blocks_reads_at_or_after_its_start_and_other_prewrites(wire):
    wire.put(b"lk/k", b"old")
    start = wire.ts()
    assert wire.prewrite({b"lk/k": b"new"}, b"lk/k", start, ttl=60_000) == []
    assert wire.get(b"lk/k", start - 1).value == b"old"  # below the lock: not its business
    got = wire.get(b"lk/k", wire.ts())
    assert got.error.locked.lock_version == start and got.error.locked.primary_lock == b"lk/k"
    assert got.error.locked.lock_ttl == 60_000 and got.error.locked.lock_type == kvrpcpb.Put
    scan = wire.scan(b"lk/", b"lk0", wire.ts())
    assert [p.error.locked.lock_version for p in scan.pairs] == [start]
    # another transaction's prewrite meets the lock: all-or-nothing, no key locked
    other = wire.ts()
    errors = wire.prewrite({b"lk/free": b"x", b"lk/k": b"x"}, b"lk/free", other)
    assert [e.locked.lock_version for e in errors] == [start]
    assert not wire.get(b"lk/free", wire.ts()).HasField("error")
    assert wire.rollback([b"lk/k"], start).error.ByteSize() == 0


def test_lock_only_keys_conflict_but_do_not_block_reads(wire):
    wire.put(b"lo/k", b"v")
    start = wire.ts()
    assert wire.prewrite({b"lo/w": b"x"}, b"lo/w", start, locks=[b"lo/k"]) == []
    assert wire.get(b"lo/k", wire.ts()).value == b"v"  # a Lock lock writes nothing
    assert wire.prewrite({b"lo/k": b"y"}, b"lo/k", wire.ts())[0].HasField("locked")
    commit = wire.ts()
    assert not wire.commit([b"lo/w", b"lo/k"], start, commit).HasField("error")
    assert wire.get(b"lo/k", wire.ts()).value == b"v"
    # the Lock record conflicts with a transaction that started before it
    errors = wire.prewrite({b"lo/k": b"z"}, b"lo/k", start + 1)
    assert errors[0].conflict.conflict_commit_ts == commit


def test_rolled_back_transactions_can_neither_prewrite_nor_commit(wire):
    start = wire.ts()
    # a rollback of a key never locked still leaves its mark (rollback protection)
    assert not wire.rollback([b"rb/k"], start).HasField("error")
    errors = wire.prewrite({b"rb/k": b"late"}, b"rb/k", start)
    assert errors[0].conflict.reason == kvrpcpb.WriteConflict.SelfRolledBack
    commit = wire.commit([b"rb/k"], start, wire.ts())
    assert "TxnLockNotFound" in commit.error.retryable
    # a committed transaction cannot be rolled back
    s2 = wire.ts()
    assert wire.prewrite({b"rb/c": b"v"}, b"rb/c", s2) == []
    c2 = wire.ts()
    assert not wire.commit([b"rb/c"], s2, c2).HasField("error")
    assert "Committed" in wire.rollback([b"rb/c"], s2).error.abort
    assert not wire.commit([b"rb/c"], s2, c2).HasField("error")  # a resent commit is fine


def test_cleanup_settles_a_primary_by_its_ttl(wire):
    live = wire.ts()
    assert wire.prewrite({b"cu/live": b"v"}, b"cu/live", live, ttl=60_000) == []
    got = wire.cleanup(b"cu/live", live, wire.ts())
    assert got.error.locked.lock_version == live  # alive: the caller must wait
    dead = wire.ts()
    assert wire.prewrite({b"cu/dead": b"v", b"cu/dead2": b"v"}, b"cu/dead", dead, ttl=1) == []
    time.sleep(0.01)
    got = wire.cleanup(b"cu/dead", dead, wire.ts())
    assert got.commit_version == 0 and not got.HasField("error")  # expired: rolled back
    assert "TxnLockNotFound" in wire.commit([b"cu/dead"], dead, wire.ts()).error.retryable
    assert not wire.resolve(dead, 0).HasField("error")  # its secondaries too
    assert not wire.get(b"cu/dead2", wire.ts()).HasField("error")
    # a committed primary: cleanup answers its commit_ts, resolve commits the rest
    s = wire.ts()
    assert wire.prewrite({b"cu/p": b"P", b"cu/s": b"S"}, b"cu/p", s, ttl=1) == []
    c = wire.ts()
    assert not wire.commit([b"cu/p"], s, c).HasField("error")
    time.sleep(0.01)
    assert wire.get(b"cu/s", wire.ts()).HasField("error")
    assert wire.cleanup(b"cu/p", s, wire.ts()).commit_version == c
    assert not wire.resolve(s, c, [b"cu/s"]).HasField("error")
    assert wire.get(b"cu/s", wire.ts()).value == b"S"
    assert wire.cleanup(b"cu/live", live, 0).commit_version == 0  # current_ts 0: regardless of TTL


def test_heartbeat_extends_a_live_transactions_ttl(wire):
    s = wire.ts()
    assert wire.prewrite({b"hb/k": b"v"}, b"hb/k", s, ttl=50) == []
    assert wire.heartbeat(b"hb/k", s, 60_000).lock_ttl == 60_000
    assert wire.heartbeat(b"hb/k", s, 10).lock_ttl == 60_000  # never shortened
    time.sleep(0.1)  # past the first TTL: still alive
    assert wire.cleanup(b"hb/k", s, wire.ts()).error.HasField("locked")
    assert wire.heartbeat(b"hb/none", s, 100).error.HasField("txn_not_found")


def test_check_txn_status(wire):
    s = wire.ts()
    assert wire.prewrite({b"ts/k": b"v"}, b"ts/k", s, ttl=60_000) == []
    alive = wire.txn_status(b"ts/k", s, wire.ts())
    assert alive.lock_ttl == 60_000 and alive.lock_info.lock_version == s
    later = wire.ts() + (61_000 << 18)  # a current_ts 61 s on: past the TTL
    assert wire.txn_status(b"ts/k", s, later).action == kvrpcpb.TTLExpireRollback
    assert wire.txn_status(b"ts/none", wire.ts(), wire.ts()).error.HasField("txn_not_found")
    gone = wire.ts()
    assert wire.txn_status(b"ts/none", gone, wire.ts(), rollback_if_not_exist=True).action == kvrpcpb.LockNotExistRollback
    assert wire.prewrite({b"ts/none": b"v"}, b"ts/none", gone)[0].conflict.reason == kvrpcpb.WriteConflict.SelfRolledBack


def test_data_and_timestamps_survive_sigkill_of_the_fake(tmp_path):
    if (why := fake_unavailable()) is not None:
        pytest.skip(why)
    proc = start_fake(tmp_path)
    wire = Wire(proc.pd_endpoint, proc.tikv_endpoint)
    try:
        wire.put(b"p/k", b"kept")
        s = wire.ts()
        assert wire.prewrite({b"p/locked": b"v"}, b"p/locked", s, ttl=60_000) == []
        last = wire.ts()
        wire.close()
        proc.kill()
        proc.start()
        wire = Wire(proc.pd_endpoint, proc.tikv_endpoint)
        after = wire.ts()
        assert after > last and physical_of(after) > physical_of(last)
        assert wire.get(b"p/k", after).value == b"kept"
        assert wire.get(b"p/locked", after).error.locked.lock_version == s  # locks persist too
        assert wire.scan(b"p/", b"p0", after, key_only=True).pairs[1].key == b"p/locked"
    finally:
        wire.close()
        proc.stop()
