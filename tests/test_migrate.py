"""brain migrate from a real etcd 3.5 under a concurrent writer: every key's
revisions, the store's revision and compact revision, the history between
them and the leases arrive in brain as they are in etcd."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import brain_server, etcd_server

pytestmark = pytest.mark.timeout(240)

ALL = b"\x00"


def migrate_cmd(src, data_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "brain", "migrate", "--from", src.endpoint, "--data-dir", str(data_dir), *extra]


def kvs_at(srv, rev: int) -> list[tuple]:
    with srv.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=ALL, range_end=ALL, revision=rev))
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in r.kvs]


def revision(srv) -> int:
    with srv.channel() as ch:
        return rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=ALL, range_end=ALL, count_only=True)).header.revision


def history(srv, start: int, end: int) -> list[tuple]:
    """The events of revisions [start, end] as a watch from start gives them."""
    out: list[tuple] = []
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=ALL, range_end=ALL, start_revision=start, prev_kv=True))
    with srv.channel() as ch:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(_then_wait(req), timeout=60)
        for resp in call:
            out += [(ev.type, ev.kv.SerializeToString(), ev.prev_kv.SerializeToString())
                    for ev in resp.events if ev.kv.mod_revision <= end]
            if resp.events and resp.events[-1].kv.mod_revision >= end:
                call.cancel()
                break
    return out


def _then_wait(req):
    yield req
    time.sleep(120)  # keep the request side open until the call is cancelled


def seed(srv) -> None:
    """History with everything a migration must carry: overwrites, deletes,
    a multi-key txn (several keys at one revision), leases, a compaction."""
    with srv.channel() as ch:
        kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
        for i in range(120):
            kv.Put(rpc_pb2.PutRequest(key=b"/registry/pods/p%03d" % i, value=b"v%d" % i))
        for i in range(0, 120, 4):
            kv.Put(rpc_pb2.PutRequest(key=b"/registry/pods/p%03d" % i, value=b"w%d" % i))
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/registry/pods/p050", range_end=b"/registry/pods/p060"))
        puts = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/txn/%d" % i, value=b"t")) for i in range(5)]
        kv.Txn(rpc_pb2.TxnRequest(success=puts))
        lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=900)).ID
        kv.Put(rpc_pb2.PutRequest(key=b"/leased/a", value=b"x", lease=lid))
        kv.Put(rpc_pb2.PutRequest(key=b"/leased/b", value=b"y", lease=lid))
        kv.Compact(rpc_pb2.CompactionRequest(revision=100))
        for i in range(100, 120):
            kv.Put(rpc_pb2.PutRequest(key=b"/registry/pods/p%03d" % i, value=b"after"))


class Writer(threading.Thread):
    """Puts, deletes and lease grants against etcd while the migration runs."""

    def __init__(self, srv) -> None:
        super().__init__()
        self.srv = srv
        self.halt = threading.Event()
        self.count = 0

    def run(self) -> None:
        with self.srv.channel() as ch:
            kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
            while not self.halt.is_set():
                i = self.count
                kv.Put(rpc_pb2.PutRequest(key=b"/load/%05d" % (i % 300), value=b"%d" % i))
                if i % 7 == 0:
                    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/load/%05d" % ((i * 13) % 300)))
                if i % 50 == 0:
                    lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600)).ID
                    kv.Put(rpc_pb2.PutRequest(key=b"/lease-load/%d" % i, value=b"l", lease=lid))
                self.count += 1


def test_migrate_under_load_then_cut_over(tmp_path):
    etcd = etcd_server(str(tmp_path)).start()
    try:
        seed(etcd)
        writer = Writer(etcd)
        writer.start()
        data = tmp_path / "brain-data"
        try:
            # follow for a while under load, then an interruption (as at a cut-over)
            follow = subprocess.Popen(migrate_cmd(etcd, data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(4)
            assert follow.poll() is None, follow.stderr.read() if follow.stderr else ""
            follow.send_signal(signal.SIGINT)
            out, err = follow.communicate(timeout=60)
            assert follow.returncode == 0, err
            assert "lag" in err and "migrated to revision" in out
            time.sleep(1)
        finally:
            writer.halt.set()
            writer.join()
        assert writer.count > 50
        final = revision(etcd)
        # the writes are stopped: resume, catch up, exit
        done = subprocess.run(migrate_cmd(etcd, data, "--once"), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"migrated to revision {final}" in done.stdout

        brain = brain_server(str(tmp_path), data_dir=str(data)).start()
        try:
            assert revision(brain) == final
            # every revision from the compact revision on reads the same
            for rev in [100, 101, 110, 130] + list(range(140, final + 1, max(1, (final - 140) // 60))) + [final]:
                assert kvs_at(brain, rev) == kvs_at(etcd, rev), f"at revision {rev}"
            # below it, both say compacted
            for srv in (etcd, brain):
                with srv.channel() as ch, pytest.raises(Exception, match="required revision has been compacted"):
                    rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=ALL, range_end=ALL, revision=99))
            # a watch resumed from an old revision gets the same events, prev_kv included
            assert history(brain, 101, final) == history(etcd, 101, final)
            # leases: the same ids, TTL no longer than etcd's remaining TTL
            with etcd.channel() as ce, brain.channel() as cb:
                le, lb = rpc_pb2_grpc.LeaseStub(ce), rpc_pb2_grpc.LeaseStub(cb)
                ids_e = sorted(x.ID for x in le.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases)
                ids_b = sorted(x.ID for x in lb.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases)
                assert ids_e == ids_b and len(ids_e) >= 2
                for lid in ids_e[:3]:
                    te = le.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=True))
                    tb = lb.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=True))
                    assert sorted(te.keys) == sorted(tb.keys)
                    # brain's lease counts down from when brain opened the
                    # store, a start-up after the copy's last lease sync
                    assert 0 < tb.TTL <= te.TTL + 3
            # the migrated store carries on from etcd's revision
            with brain.channel() as ch:
                assert rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/after", value=b"1")).header.revision == final + 1
        finally:
            brain.stop()
    finally:
        etcd.stop()


def test_migrate_refuses_foreign_directories(tmp_path):
    a = etcd_server(str(tmp_path)).start()
    b = etcd_server(str(tmp_path)).start()
    try:
        for srv in (a, b):
            with srv.channel() as ch:
                rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
        data = tmp_path / "d"
        assert subprocess.run(migrate_cmd(a, data, "--once"), capture_output=True, timeout=60).returncode == 0
        other = subprocess.run(migrate_cmd(b, data, "--once"), capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and "another cluster" in other.stderr
        # a brain store that is no migration target
        served = brain_server(str(tmp_path)).start()
        with served.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
        served.stop()
        r = subprocess.run(migrate_cmd(a, served.data_dir, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "not a migration target" in r.stderr
        # an etcd that was never compacted: the whole history is replayed from revision 1
        fresh = tmp_path / "fresh"
        r = subprocess.run(migrate_cmd(a, fresh, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        restored = brain_server(str(tmp_path), data_dir=str(fresh)).start()
        try:
            assert kvs_at(restored, 0) == kvs_at(a, 0) and revision(restored) == revision(a)
        finally:
            restored.stop()
    finally:
        a.stop()
        b.stop()


def test_migrate_refuses_a_copy_interrupted_before_its_keys(tmp_path):
    """A run stopped while copying the keys at the compact revision leaves a
    directory without the store's revision: a later run must not take it for
    a complete copy and replay on top of missing keys."""
    import asyncio

    from brain.migrate.importer import RevisionImporter
    from engines import open_engine

    etcd = etcd_server(str(tmp_path)).start()
    try:
        seed(etcd)
        with etcd.channel() as ch:
            cluster_id = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k")).header.cluster_id
            some = list(rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=ALL, range_end=ALL, revision=100, limit=10)).kvs)
        data = tmp_path / "d"

        async def first_page_only() -> None:  # what a run killed after its first page left
            importer = RevisionImporter(open_engine("leveldb", data_dir=str(data)))
            await importer.begin(cluster_id, 100)
            await importer.base(some)
            await importer.close()

        asyncio.run(first_page_only())
        r = subprocess.run(migrate_cmd(etcd, data, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "before the copy was complete" in r.stderr, r.stderr
    finally:
        etcd.stop()
