"""A 20,000-key DeleteRange and the revoke of a lease with 20,000 keys, to
etcd 3.5.1 and to a brain server process alike, with writes and new watches
right behind each (brain fans the big revision out in slices after it has
answered the write, so they race it). Every watch must be told exactly what
etcd tells it, events flattened (framing may differ); and etcdctl watching
brain must print every event once."""
from __future__ import annotations

import subprocess

import pytest

from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from servers import brain_server, etcd_server, etcd_tool
from test_watch_differential import SENTINEL_ID, SENTINEL_KEY, Pair, _start_both, create, put_op

N = 20_000
VALUE = b"v" * 64  # with N, a revision of more than 2 MiB of events: fragmented for watch 6
LEASE = 0x7B1D
NOPUT = pb.WatchCreateRequest.NOPUT
NODELETE = pb.WatchCreateRequest.NODELETE


def send(streams, req: pb.WatchRequest) -> None:
    """Pair.send, with time to read the big responses queued before the reply."""
    for s in streams:
        s.send(req)
        if req.HasField("create_request"):
            s.read_until(lambda r: r.created, timeout=120)


def sync(p: Pair, streams) -> None:
    rev = p.put(SENTINEL_KEY, b"x")
    for s in streams:
        s.read_until(lambda r: r.watch_id == SENTINEL_ID and any(e.kv.mod_revision == rev for e in r.events), timeout=120)
        s.quiet(1.0)


def key(kind: str, i: int) -> bytes:
    return b"b/%s/%05d" % (kind.encode(), i)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("bigrev"))
    etcd = etcd_server(tmp, "--max-txn-ops", "1000")
    brain = brain_server(tmp, "--max-txn-ops", "1000")
    _start_both(etcd, brain)
    p = Pair(etcd, brain)
    yield p
    p.close()
    etcd.stop()
    brain.stop()


def test_big_delete_range_and_lease_revoke_match_etcd(pair, tmp_path):
    p = pair
    p.call("LeaseGrant", pb.LeaseGrantRequest(ID=LEASE, TTL=3600), stub="lease")
    for i in range(0, N, 1000):
        p.txn(*[put_op(key("d", j), VALUE) for j in range(i, i + 1000)])
        p.call("Txn", pb.TxnRequest(success=[
            pb.RequestOp(request_put=pb.PutRequest(key=key("l", j), value=VALUE, lease=LEASE)) for j in range(i, i + 1000)
        ]))
    etcdctl = subprocess.Popen(
        [etcd_tool("etcdctl"), "--endpoints", p.servers[1].endpoint, "watch", "--prefix", "b/"],
        stdout=open(tmp_path / "etcdctl.out", "wb"), stderr=subprocess.STDOUT,
    )
    try:
        streams = p.streams()
        kinds = {
            1: create(key=b"b/", range_end=b"b0", watch_id=1),
            2: create(key=b"b/", range_end=b"b0", watch_id=2, prev_kv=True),
            3: create(key=key("d", 12345), watch_id=3, prev_kv=True),
            4: create(key=b"b/", range_end=b"b0", watch_id=4, filters=[NOPUT]),
            5: create(key=key("l", 1000), range_end=key("l", 2000), watch_id=5, filters=[NODELETE], prev_kv=True),
            6: create(key=b"b/", range_end=b"b0", watch_id=6, fragment=True, prev_kv=True),
        }
        for req in kinds.values():
            send(streams, req)
        deleted_at = p.delete(b"b/d/", b"b/d0")
        # right behind it, while brain may still be fanning it out
        p.put(key("d", 12345), b"back")
        send(streams, create(key=b"b/", range_end=b"b0", watch_id=7, prev_kv=True))
        send(streams, create(key=b"b/", range_end=b"b0", watch_id=8, start_revision=deleted_at))
        p.put(key("l", 1500), b"moved")  # off the lease
        p.call("LeaseRevoke", pb.LeaseRevokeRequest(ID=LEASE), stub="lease")
        p.put(key("l", 1500), b"again")
        send(streams, create(key=b"b/", range_end=b"b0", watch_id=9, filters=[NODELETE]))
        p.put(key("d", 1), b"last")
        sync(p, streams)
        told = p.compare(streams, list(range(1, 10)))
    finally:
        etcdctl.terminate()
        etcdctl.wait(10)
    deletes = sum(1 for told_ in told[1] if told_.kind == "event" and told_.msg.type == kv_pb2.Event.DELETE)
    assert deletes == 2 * N - 1  # the delete range, and the revoke (one key moved off the lease)
    assert len(told[8]) > N  # from the delete's revision on: the delete itself too
    for s in streams:  # the big revisions were too big for one response
        assert any(r.fragment for r in s.seen if r.watch_id == 6), s.srv.kind
    lines = (tmp_path / "etcdctl.out").read_bytes().split(b"\n")
    assert lines.count(b"DELETE") == deletes
    assert lines.count(b"PUT") == 4
