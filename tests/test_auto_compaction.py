"""--auto-compaction-mode and --auto-compaction-retention.

Periodic mode runs against etcd and brain side by side with a retention of
seconds. Revision mode checks every five minutes in etcd; brain's check
interval is shortened by a hidden flag, so it runs against brain alone.
Nothing here asserts on how long something took: the tests wait (with a
generous deadline) for a compaction to happen, then check at which revision
it happened."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.server.autocompact import parse_retention
from servers import ROOT, brain_server, etcd_server

DEADLINE = 60.0


def compacted_at(kv: rpc_pb2_grpc.KVStub, current: int) -> int:
    """The oldest revision a range may still read, found by bisection: the
    store's compaction revision, or 1 when it never compacted."""
    def readable(rev: int) -> bool:
        try:
            kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=rev), timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.OUT_OF_RANGE, e
            return False
        return True

    if readable(1):
        return 1  # never compacted, or at 1: the same to these tests
    lo, hi = 1, current  # lo unreadable, hi readable
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if readable(mid):
            hi = mid
        else:
            lo = mid
    return hi


def periodic_run(srv, period: float) -> tuple[int, list[tuple[float, int]]]:
    """Put a key every 50 ms until the server compacts; the compaction
    revision and the (time, revision) of every put."""
    with srv.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        puts: list[tuple[float, int]] = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            rev = kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10).header.revision
            puts.append((time.monotonic(), rev))
            # probe only the revisions a range can reach: no compaction below 2
            if len(puts) % 10 == 0:
                at = compacted_at(kv, rev)
                if at > 1:
                    return at, puts
            time.sleep(0.05)
    raise AssertionError(f"{srv.kind} did not compact within {DEADLINE}s")


@pytest.mark.parametrize("kind", ["etcd", "brain"])
def test_periodic_compacts_at_the_revision_of_one_period_ago(tmp_path, kind):
    period = 2.0
    flags = ("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s")
    srv = (etcd_server if kind == "etcd" else brain_server)(str(tmp_path), *flags).start()
    try:
        at, puts = periodic_run(srv, period)
        observed = puts[-1][0]
        # whatever it compacted at was the store's revision at least one
        # period before the compaction, so at least one period before now
        older = [rev for t, rev in puts if t <= observed - period]
        assert older, "compacted before a period had passed"
        assert at <= max(older), (at, max(older))
        assert at < puts[-1][1]
    finally:
        srv.stop()


def test_revision_mode_keeps_the_last_n_revisions(tmp_path):
    keep = 10
    brain = brain_server(
        str(tmp_path), "--auto-compaction-mode", "revision", "--auto-compaction-retention", str(keep),
        "--experimental-auto-compaction-revision-interval", "0.2",
    ).start()
    try:
        with brain.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for _ in range(30):
                rev = kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10).header.revision
            deadline = time.monotonic() + DEADLINE
            while compacted_at(kv, rev) != rev - keep:
                assert time.monotonic() < deadline, "no compaction at the current revision minus the retention"
                time.sleep(0.2)
            # the last `keep` revisions stay readable
            r = kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=rev - keep), timeout=10)
            assert r.kvs[0].mod_revision == rev - keep
    finally:
        brain.stop()


def test_retention_parsed_as_etcd_does():
    assert parse_retention("periodic", "1") == 3600.0  # a bare number is hours
    assert parse_retention("periodic", "30m") == 1800.0
    assert parse_retention("periodic", "1h30m") == 5400.0
    assert parse_retention("periodic", "0") == 0.0
    assert parse_retention("revision", "1000") == 1000.0
    with pytest.raises(ValueError, match='missing unit in duration "-1"'):
        parse_retention("periodic", "-1")
    with pytest.raises(ValueError, match='unknown auto-compaction-mode "daily"'):
        parse_retention("daily", "1")


@pytest.mark.parametrize("flags,message", [
    (("--auto-compaction-mode", "daily", "--auto-compaction-retention", "1"), 'unknown auto-compaction-mode "daily"'),
    (("--auto-compaction-retention", "-1"), 'missing unit in duration "-1"'),
])
def test_bad_flags_refused_at_start(tmp_path, flags, message):
    r = subprocess.run([sys.executable, "-m", "brain", "serve", "--data-dir", str(tmp_path / "d"), *flags],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0
    (line,) = r.stderr.splitlines()  # one fatal log line
    assert message in json.loads(line)["msg"]
