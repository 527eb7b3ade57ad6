"""brain migrate --to: a real etcd 3.5 copied into a running brain (started
with --migration-target) under a concurrent writer. The brain refuses
client writes until the cut-over and serves reads and watches at etcd's
revisions meanwhile; after it, `brain check` finds no difference and old
revisions' watches on brain give etcd's events."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from certs import make_pki
from servers import brain_server, etcd_server
from test_migrate import ALL, Writer, history, kvs_at, revision, seed

pytestmark = pytest.mark.timeout(240)

LEARNER = "etcdserver: rpc not supported for learner"


def migrate_to(src, dst, *extra: str) -> list[str]:
    return [sys.executable, "-m", "brain", "migrate", "--from", src.endpoint, "--to", dst.endpoint, *extra]


def wait_for(what, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class WatchLog(threading.Thread):
    """Every response of one watch on a server: (events, compact_revision, canceled)."""

    def __init__(self, srv, start_revision: int) -> None:
        super().__init__(daemon=True)
        self.srv, self.start_revision = srv, start_revision
        self.events: list[tuple] = []
        self.compacted = 0
        self.created = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        create = rpc_pb2.WatchCreateRequest(key=ALL, range_end=ALL, start_revision=self.start_revision, prev_kv=True)

        def requests():
            yield rpc_pb2.WatchRequest(create_request=create)
            self.halt.wait(200)

        with self.srv.channel() as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(requests(), timeout=200)
            try:
                for resp in call:
                    if resp.created:
                        self.created.set()
                    if resp.compact_revision:
                        self.compacted = resp.compact_revision
                        return
                    self.events += [(ev.type, ev.kv.SerializeToString(), ev.prev_kv.SerializeToString()) for ev in resp.events]
                    if self.halt.is_set():
                        return
            except grpc.RpcError:
                pass
            finally:
                call.cancel()

    def revisions(self) -> list[int]:
        from brain.etcdpb import kv_pb2
        return [kv_pb2.KeyValue.FromString(kv).mod_revision for _, kv, _ in self.events]


def refused(call) -> None:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details() == LEARNER, e.value


def test_migrate_into_running_brain_under_load(tmp_path):
    etcd = etcd_server(str(tmp_path)).start()
    brain = brain_server(str(tmp_path), "--migration-target").start()
    try:
        seed(etcd)  # compacted at 100, leases, txns, deletes
        early = WatchLog(brain, 0)  # from before the copy: its revisions are compacted away
        early.start()
        assert early.created.wait(10)
        writer = Writer(etcd)
        writer.start()
        follow = subprocess.Popen(migrate_to(etcd, brain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: revision(brain) > 100)
            from_rev = revision(brain)
            during = WatchLog(brain, from_rev)  # at a revision the import has reached, while it goes on
            during.start()
            assert during.created.wait(10)
            time.sleep(3)
            assert follow.poll() is None
            # before the cut-over: reads at etcd's revisions, no writes of brain's own
            assert kvs_at(brain, from_rev) == kvs_at(etcd, from_rev)
            with brain.channel() as ch:
                kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
                refused(lambda: kv.Put(rpc_pb2.PutRequest(key=b"/mine", value=b"x")))
                refused(lambda: kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/registry/pods/p000")))
                refused(lambda: kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=b"/mine", value=b"x"))])))
                refused(lambda: kv.Compact(rpc_pb2.CompactionRequest(revision=from_rev)))
                refused(lambda: lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60)))
                # a read-only txn is a read
                got = kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                    request_range=rpc_pb2.RangeRequest(key=b"/registry/pods/p001"))]))
                assert got.responses[0].response_range.kvs[0].value == b"v1"
        finally:
            writer.halt.set()
            writer.join()
        assert writer.count > 50
        time.sleep(1)
        final = revision(etcd)
        follow.send_signal(signal.SIGINT)  # the cut-over: catch up with etcd's revision now, then take writes
        out, err = follow.communicate(timeout=120)
        assert follow.returncode == 0, err
        assert "lag" in err and f"migrated to revision {final}" in out and "cut over" in out
        assert revision(brain) == final

        # the watch from before the copy was told its revisions are gone, as etcd would
        early.join(10)
        assert early.compacted == 100
        # the watch made during the import saw every event, in order, as etcd's watch gives them
        with brain.channel() as ch:
            assert rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/after", value=b"1")).header.revision == final + 1
        wait_for(lambda: during.revisions()[-1:] == [final + 1], 30)
        during.halt.set()
        revs = during.revisions()
        assert revs == sorted(revs) and revs[0] == from_rev
        assert during.events[:-1] == history(etcd, from_rev, final)

        # no difference, key by key, at etcd's last revision
        check = subprocess.run([sys.executable, "-m", "brain", "check", etcd.url, brain.url, "--revision", str(final)],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        # watches resumed at old revisions on brain give etcd's events
        assert history(brain, 101, final) == history(etcd, 101, final)
        for srv in (etcd, brain):
            with srv.channel() as ch, pytest.raises(grpc.RpcError, match="required revision has been compacted"):
                rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=ALL, range_end=ALL, revision=99))
        # leases: etcd's, running on brain now
        with etcd.channel() as ce, brain.channel() as cb:
            ids_e = sorted(x.ID for x in rpc_pb2_grpc.LeaseStub(ce).LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases)
            lb = rpc_pb2_grpc.LeaseStub(cb)
            assert sorted(x.ID for x in lb.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases) == ids_e
            assert lb.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60)).TTL == 60
        # a restart keeps it writable and refuses a migration into it
        brain.restart()
        with brain.channel() as ch:
            assert rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/after", value=b"2")).header.revision == final + 2
    finally:
        brain.stop()
        etcd.stop()


def test_migration_target_refusals(tmp_path):
    a = etcd_server(str(tmp_path)).start()
    b = etcd_server(str(tmp_path)).start()
    plain = brain_server(str(tmp_path)).start()
    target = brain_server(str(tmp_path), "--migration-target").start()
    try:
        for srv in (a, b):
            with srv.channel() as ch:
                for i in range(20):
                    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v"))
        # a brain not started for it
        r = subprocess.run(migrate_to(a, plain, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "--migration-target" in r.stderr, r.stderr
        # --migration-target on a store that holds keys: brain does not start
        with plain.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
        plain.stop()
        held = brain_server(str(tmp_path), "--migration-target", data_dir=plain.data_dir)
        with pytest.raises(RuntimeError, match="needs an empty one"):
            held.start()
        # a migration that stopped without its cut-over (killed here) is carried
        # on only from the same source
        follow = subprocess.Popen(migrate_to(a, target), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: revision(target) == revision(a))
        follow.kill()
        follow.wait()
        with target.channel() as ch:
            refused(lambda: rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/mine", value=b"x")))
        r = subprocess.run(migrate_to(b, target, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "another cluster" in r.stderr, r.stderr
        r = subprocess.run(migrate_to(a, target, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "cut over" in r.stdout, r.stderr
        assert kvs_at(target, 0) == kvs_at(a, 0)
        # cut over: no second migration
        r = subprocess.run(migrate_to(a, target, "--once"), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "takes no migration" in r.stderr, r.stderr
    finally:
        for srv in (a, b, plain, target):
            srv.stop()


def test_large_values_and_revisions_go_in_parts(tmp_path):
    """Keys and revisions larger than one request to the target (1 MiB;
    brain receives at most 2 MiB by default): the copied keys are split over
    requests, a 2.8 MiB revision over parts the target joins before applying;
    a revision of 5,130 deletes is applied a slice at a time."""
    etcd = etcd_server(str(tmp_path), "--max-request-bytes", str(8 << 20)).start()
    target = brain_server(str(tmp_path), "--migration-target").start()
    try:
        with etcd.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(6):
                kv.Put(rpc_pb2.PutRequest(key=b"/big/base-%d" % i, value=bytes([65 + i]) * (900 << 10)))
            compact = kv.Put(rpc_pb2.PutRequest(key=b"/small", value=b"s")).header.revision
            kv.Compact(rpc_pb2.CompactionRequest(revision=compact))
            puts = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/big/txn-%d" % i, value=bytes([97 + i]) * (700 << 10)))
                    for i in range(4)]
            kv.Txn(rpc_pb2.TxnRequest(success=puts))
            kv.Put(rpc_pb2.PutRequest(key=b"/big/base-1", value=b"small now"))
            # a revision of more deletes than the target applies per turn of
            # its event loop (YIELD_EVERY)
            for t in range(40):
                kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                    key=b"/big/many-%05d" % (t * 128 + i), value=b"m")) for i in range(128)]))
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/big/", range_end=b"/big0"))
        final = revision(etcd)
        r = subprocess.run(migrate_to(etcd, target, "--once"), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"migrated to revision {final} (7 keys copied, 43 revisions replayed" in r.stdout
        for rev in (compact, compact + 1, compact + 2, final - 1, final):
            assert kvs_at(target, rev) == kvs_at(etcd, rev), f"at revision {rev}"
        assert history(target, compact + 1, final) == history(etcd, compact + 1, final)
    finally:
        target.stop()
        etcd.stop()


def test_migrate_into_a_brain_over_tls(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    etcd = etcd_server(str(tmp_path)).start()
    target = brain_server(str(tmp_path), "--migration-target", tls=(pki["ca"], pki["server"], pki["server_key"])).start()
    try:
        seed(etcd)
        to = ["--to", f"https://{target.endpoint}", "--to-cacert", pki["ca"]]
        cmd = [sys.executable, "-m", "brain", "migrate", "--from", etcd.endpoint, *to, "--once"]
        # the target requires a client certificate
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "migration failed" in r.stderr, r.stderr
        r = subprocess.run(cmd + ["--to-cert", pki["client"], "--to-key", pki["client_key"]], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "cut over" in r.stdout, r.stderr
        assert kvs_at(target, 0) == kvs_at(etcd, 0) and revision(target) == revision(etcd)
    finally:
        target.stop()
        etcd.stop()


def test_second_signal_stops_without_cut_over(tmp_path):
    etcd = etcd_server(str(tmp_path)).start()
    target = brain_server(str(tmp_path), "--migration-target").start()
    try:
        seed(etcd)
        follow = subprocess.Popen(migrate_to(etcd, target), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: revision(target) == revision(etcd))
        follow.send_signal(signal.SIGSTOP)  # held while etcd moves on: a lag to catch up at the cut-over
        with etcd.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(3000):
                kv.Put(rpc_pb2.PutRequest(key=b"/lag/%d" % (i % 50), value=b"%d" % i))
        follow.send_signal(signal.SIGCONT)
        follow.send_signal(signal.SIGINT)
        time.sleep(0.1)
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 1 and "without a cut-over" in out, out + err
        assert revision(target) < revision(etcd)
        with target.channel() as ch:
            refused(lambda: rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"/mine", value=b"x")))
        r = subprocess.run(migrate_to(etcd, target, "--once"), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "cut over" in r.stdout, r.stderr
        assert revision(target) == revision(etcd) and kvs_at(target, 0) == kvs_at(etcd, 0)
    finally:
        target.stop()
        etcd.stop()
