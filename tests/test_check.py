"""`brain check A B` between real etcd 3.5 and brain given the same
operations: equal, then a value, a lease, a missing key and the revision
told apart; thousands of keys in small pages; TLS."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brain.check import SHOWN_BYTES, show
from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc
from certs import make_pki
from servers import ROOT, brain_server

LEASE = 0x77


def check(a, b, *args: str, a_url: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "brain", "check", a_url or a.url, b.url, *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )


def both(pair, fn) -> list:
    """fn(KV stub, Lease stub) on each server; its answers, which must agree
    where they are revisions."""
    out = []
    for srv in pair:
        with srv.channel() as ch:
            out.append(fn(rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)))
    return out


def load(kv, lease) -> int:
    lease.LeaseGrant(pb.LeaseGrantRequest(ID=LEASE, TTL=600))
    for i in range(5):
        kv.Put(pb.PutRequest(key=b"/registry/pods/p%d" % i, value=b"pod %d" % i))
    kv.Put(pb.PutRequest(key=b"/registry/leases/l", value=b"held", lease=LEASE))
    kv.Txn(pb.TxnRequest(success=[
        pb.RequestOp(request_put=pb.PutRequest(key=b"/registry/svc/s", value=b"\x00\xffbinary")),
        pb.RequestOp(request_put=pb.PutRequest(key=b"/registry/pods/p1", value=b"pod 1 again")),
        pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"/registry/pods/p4")),
    ]))
    return kv.Put(pb.PutRequest(key=b"other", value=b"o")).header.revision


@pytest.fixture
def pair(etcd, brain):
    revs = both((etcd, brain), load)
    assert revs[0] == revs[1]
    return etcd, brain


def diff_lines(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if "\t" in line]


def test_equal_then_each_difference_reported(pair):
    etcd, brain = pair
    same = check(etcd, brain)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip() == "equal: 7 keys compared at revision 9"

    # a value and a lease differ; both servers still take the same revisions
    both(pair, lambda kv, _: kv.Put(pb.PutRequest(key=b"/registry/pods/p0", value=b"x")))
    with etcd.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"/registry/pods/p2", value=b"pod 2", lease=LEASE))
    with brain.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"/registry/pods/p3", value=b"changed"))
    got = check(etcd, brain)
    assert got.returncode == 1, got.stdout + got.stderr
    assert diff_lines(got.stdout) == [
        ['"/registry/pods/p2"', 'mod_revision', 'A: 11', 'B: 4'],
        ['"/registry/pods/p2"', 'version', 'A: 2', 'B: 1'],
        ['"/registry/pods/p2"', 'lease', f'A: {LEASE}', 'B: 0'],
        ['"/registry/pods/p3"', 'value', 'A: "pod 3"', 'B: "changed"'],
        ['"/registry/pods/p3"', 'mod_revision', 'A: 5', 'B: 11'],
        ['"/registry/pods/p3"', 'version', 'A: 1', 'B: 2'],
    ]
    assert got.stdout.splitlines()[-1] == "different: 7 keys compared at revision 11; 6 differences in 2 keys"

    # before the differences the two agree
    assert check(etcd, brain, "--revision", "10").returncode == 0
    # a prefix that leaves the differing keys out
    only = check(etcd, brain, "--prefix", "/registry/svc/")
    assert (only.returncode, only.stdout.strip()) == (0, "equal: 1 keys compared at revision 11")

    # a key on one side only, and so different revisions
    with brain.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"/registry/extra", value=b"e"))
    got = check(etcd, brain, "--prefix", "/registry/")
    assert got.returncode == 1
    lines = diff_lines(got.stdout)
    assert lines[0] == ["(revision)", "revision", "A: 11", "B: 12"]
    assert ['"/registry/extra"', "key", "A: absent", "B: present"] in lines
    assert got.stdout.splitlines()[-1].endswith("and the revisions differ")


def test_unreadable_revision_exits_2(pair):
    etcd, brain = pair
    got = check(etcd, brain, "--revision", "100")
    assert got.returncode == 2
    assert "required revision is a future revision" in got.stderr


def test_thousands_of_keys_in_small_pages(pair):
    etcd, brain = pair
    n = 3000

    def fill(kv, _lease):
        rev = 0
        for start in range(0, n, 100):
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"/bulk/%05d" % i, value=b"v%d" % i))
                   for i in range(start, start + 100)]
            rev = kv.Txn(pb.TxnRequest(success=ops)).header.revision
        return rev

    revs = both(pair, fill)
    assert revs[0] == revs[1]
    got = check(etcd, brain, "--prefix", "/bulk/", "--page-size", "7")
    assert (got.returncode, got.stdout.strip()) == (0, f"equal: {n} keys compared at revision {revs[0]}")

    # one key in the middle differs, and one near the end is missing on B
    with etcd.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"/bulk/01500", value=b"changed"))
    with brain.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).DeleteRange(pb.DeleteRangeRequest(key=b"/bulk/02999"))
    got = check(etcd, brain, "--prefix", "/bulk/", "--page-size", "7")
    assert got.returncode == 1
    keys = sorted({line[0] for line in diff_lines(got.stdout)} - {"(revision)"})
    assert keys == ['"/bulk/01500"', '"/bulk/02999"']
    assert f"{n} keys compared" in got.stdout.splitlines()[-1]


def test_over_tls(tmp_path, etcd):
    pki = make_pki(str(tmp_path / "pki"))
    secure = brain_server(str(tmp_path), tls=(pki["ca"], pki["server"], pki["server_key"])).start()
    try:
        revs = both((etcd, secure), load)
        assert revs[0] == revs[1]
        url = f"https://{secure.endpoint}"
        got = check(secure, etcd, "--cacert", pki["ca"], "--cert", pki["client"], "--key", pki["client_key"],
                    a_url=url)
        assert (got.returncode, got.stdout.strip()) == (0, "equal: 7 keys compared at revision 9"), got.stderr
        # without a client certificate the brain refuses
        got = check(secure, etcd, "--cacert", pki["ca"], a_url=url)
        assert got.returncode == 2, got.stdout + got.stderr
    finally:
        secure.stop()


def test_how_values_are_shown():
    assert show(b"pod 1") == '"pod 1"'
    assert show(b'say "hi"\n') == '"say \\"hi\\"\\n"'
    assert show(b"\x00\xffbinary") == "'\\x00\\xffbinary'"
    assert show(b"v" * 100) == '"' + "v" * SHOWN_BYTES + '"... (100 bytes)'
    assert show(b"/registry/" + b"k" * 100, cut=False) == '"/registry/' + "k" * 100 + '"'
    assert show(7) == "7"


def test_after_a_migration(tmp_path, etcd):
    """The use it is for: etcd migrated into brain (`brain migrate --once`)
    checks equal, revisions included, and a write to one side afterwards is
    seen."""
    with etcd.channel() as ch:
        load(rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch))
    data = tmp_path / "migrated"
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "brain", "migrate", "--from", etcd.endpoint, "--data-dir", str(data),
                           "--once"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    migrated = brain_server(str(tmp_path), data_dir=str(data)).start()
    try:
        got = check(etcd, migrated)
        assert (got.returncode, got.stdout.strip()) == (0, "equal: 7 keys compared at revision 9"), got.stderr
        with migrated.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"/registry/pods/p0", value=b"after"))
        got = check(etcd, migrated)
        assert got.returncode == 1
        assert ['"/registry/pods/p0"', "value", 'A: "pod 0"', 'B: "after"'] in diff_lines(got.stdout)
    finally:
        migrated.stop()


def test_check_against_a_snapshot(tmp_path, brain):
    with brain.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(300):
            kv.Put(pb.PutRequest(key=b"/snap/%03d" % i, value=b"v%d" % i))
        rev = kv.Range(pb.RangeRequest(key=b"/snap/", count_only=True)).header.revision
    snap = tmp_path / "s.db"
    saved = subprocess.run([sys.executable, "-m", "brain", "snapshot", "save", str(snap), "--endpoints", brain.endpoint],
                           capture_output=True, text=True, timeout=60)
    assert saved.returncode == 0, saved.stderr

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "brain", "check", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)

    same = run(brain.endpoint, str(snap), "--revision", str(rev))
    assert same.returncode == 0 and f"equal: 300 keys compared at revision {rev}" in same.stdout, same.stdout + same.stderr
    with brain.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"/snap/007", value=b"changed"))
    # at the snapshot's revision the endpoint still matches; at its current one it does not
    assert run(str(snap), brain.endpoint, "--revision", str(rev)).returncode == 0
    moved = run(str(snap), brain.endpoint, "--revision", str(rev + 1))
    assert moved.returncode == 2 and f"holds revision {rev} only" in moved.stderr
    differ = run(brain.endpoint, str(snap))
    assert differ.returncode == 1 and "/snap/007" in differ.stdout
    damaged = tmp_path / "bad.db"
    raw = snap.read_bytes()
    damaged.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    bad = run(brain.endpoint, str(damaged), "--revision", str(rev))
    assert bad.returncode == 2 and "damaged" in bad.stderr
