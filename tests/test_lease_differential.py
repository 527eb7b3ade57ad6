"""The Lease service against real etcd 3.5: the same requests to both,
responses compared field by field (cluster_id, member_id and raft_term
cleared; a remaining TTL may differ by a second), and expiry timed on both."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc
from brain.lease import MAX_TTL
from brain.server.lease import _KEYS, MANY_KEYS
from differential import Mismatch, Outcome, normalize
from servers import ServerProcess, brain_server, etcd_server


def start_all(*servers: ServerProcess) -> None:
    errors: list[BaseException] = []

    def start(s: ServerProcess) -> None:
        try:
            s.start()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]


class Side:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.channel = srv.channel()
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)

    def call(self, service: str, method: str, req) -> Outcome:
        try:
            return Outcome(resp=getattr(getattr(self, service), method)(req, timeout=10))
        except grpc.RpcError as e:
            return Outcome(code=e.code(), details=e.details())

    def keep_alive(self, ids: list[int]) -> list[pb.LeaseKeepAliveResponse]:
        it = self.lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=i) for i in ids]), timeout=10)
        return list(it)


def _loosen(resp, like):
    """resp with what may legitimately differ from like made equal: a
    remaining TTL one second off, and the order of attached keys."""
    out = normalize(resp)
    if isinstance(out, pb.LeaseTimeToLiveResponse):
        if abs(out.TTL - like.TTL) <= 1:
            out.TTL = like.TTL
        keys = sorted(out.keys)
        del out.keys[:]
        out.keys.extend(keys)
    return out


class Pair:
    def __init__(self, etcd: ServerProcess, brain: ServerProcess) -> None:
        self.etcd = Side(etcd)
        self.brain = Side(brain)

    def both(self, service: str, method: str, req, *, ignore_id: bool = False) -> tuple[Outcome, Outcome]:
        a = self.etcd.call(service, method, req)
        b = self.brain.call(service, method, req)
        if a.resp is not None and b.resp is not None:
            ra, rb = _loosen(a.resp, a.resp), _loosen(b.resp, a.resp)
            if ignore_id:
                ra.ID = rb.ID = 0
            same = ra == rb
        else:
            same = a.resp is None and b.resp is None and (a.code, a.details) == (b.code, b.details)
        if not same:
            raise Mismatch(f"{method} {req}\netcd:\n{a.describe()}\nbrain:\n{b.describe()}")
        return a, b

    def same(self, service: str, method: str, req):
        return self.both(service, method, req)[0].resp

    def close(self) -> None:
        self.etcd.channel.close()
        self.brain.channel.close()


@pytest.fixture(scope="module", params=["grpcio", "h2"])
def pair(request, tmp_path_factory):
    """etcd and brain, brain on each of its gRPC servers (the keep-alive
    stream is the one bidirectional call the KV suites do not cover)."""
    tmp = str(tmp_path_factory.mktemp("lease-diff"))
    etcd, brain = etcd_server(tmp), brain_server(tmp, "--transport", request.param)
    start_all(etcd, brain)
    p = Pair(etcd, brain)
    yield p
    p.close()
    etcd.stop()
    brain.stop()


def grant(ttl: int, lease_id: int = 0) -> pb.LeaseGrantRequest:
    return pb.LeaseGrantRequest(TTL=ttl, ID=lease_id)


def revoke(lease_id: int) -> pb.LeaseRevokeRequest:
    return pb.LeaseRevokeRequest(ID=lease_id)


def ttl_req(lease_id: int, keys: bool = False) -> pb.LeaseTimeToLiveRequest:
    return pb.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)


def put(key: bytes, lease: int = 0, value: bytes = b"v") -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, lease=lease)


def test_grant_variants(pair):
    ids = []
    for lease_id, ttl in [(1001, 60), (1002, 0), (1003, 1), (1004, -5), (-1005, 30), (1006, MAX_TTL)]:
        resp = pair.same("lease", "LeaseGrant", grant(ttl, lease_id))
        assert resp.ID == lease_id
        ids.append(lease_id)
    # the minimum TTL, as etcd applies it
    assert pair.same("lease", "LeaseTimeToLive", ttl_req(1002)).grantedTTL == 2
    # duplicates, and a TTL over the maximum (checked first, as in etcd)
    pair.same("lease", "LeaseGrant", grant(10, 1001))
    pair.same("lease", "LeaseGrant", grant(MAX_TTL + 1, 1001))
    pair.same("lease", "LeaseGrant", grant(MAX_TTL + 1, 1007))
    # a server-chosen id: positive, and not the same on both
    a, b = pair.both("lease", "LeaseGrant", grant(30), ignore_id=True)
    assert a.resp.ID > 0 and b.resp.ID > 0
    pair.etcd.call("lease", "LeaseRevoke", revoke(a.resp.ID))
    pair.brain.call("lease", "LeaseRevoke", revoke(b.resp.ID))
    for lease_id in ids:
        pair.same("lease", "LeaseRevoke", revoke(lease_id))


def test_put_with_unknown_lease(pair):
    pair.same("kv", "Put", put(b"u/1", 424242))
    ok_if = pb.Compare(key=b"u/none", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=0)
    bad = pb.RequestOp(request_put=put(b"u/2", 424242))
    good = pb.RequestOp(request_put=put(b"u/3"))
    pair.same("kv", "Txn", pb.TxnRequest(compare=[ok_if], success=[good, bad]))
    # only the branch taken is checked
    pair.same("kv", "Txn", pb.TxnRequest(compare=[ok_if], success=[good], failure=[bad]))
    pair.same("kv", "Range", pb.RangeRequest(key=b"u/", range_end=b"u0"))


def test_attach_detach_and_revoke_in_one_revision(pair):
    pair.same("lease", "LeaseGrant", grant(120, 2001))
    pair.same("lease", "LeaseGrant", grant(120, 2002))
    for k in (b"r/1", b"r/2", b"r/3", b"r/4"):
        pair.same("kv", "Put", put(k, 2001))
    pair.same("kv", "Put", put(b"r/2"))  # detached by a Put without a lease
    pair.same("kv", "Put", put(b"r/4", 2002))  # moved to another lease
    pair.same("kv", "DeleteRange", pb.DeleteRangeRequest(key=b"r/3"))  # deleted: detached
    pair.same("kv", "Put", put(b"r/5", 2001))
    t = pb.TxnRequest(success=[pb.RequestOp(request_put=put(b"r/6", 2001))])
    pair.same("kv", "Txn", t)
    got = pair.same("lease", "LeaseTimeToLive", ttl_req(2001, keys=True))
    assert sorted(got.keys) == [b"r/1", b"r/5", b"r/6"]
    pair.same("lease", "LeaseTimeToLive", ttl_req(2002, keys=True))

    before = pair.same("kv", "Range", pb.RangeRequest(key=b"r/", range_end=b"r0"))
    resp = pair.same("lease", "LeaseRevoke", revoke(2001))
    rev = resp.header.revision
    assert rev == before.header.revision + 1  # three keys, one revision
    after = pair.same("kv", "Range", pb.RangeRequest(key=b"r/", range_end=b"r0"))
    assert [kv.key for kv in after.kvs] == [b"r/2", b"r/4"]
    # the keys are there just before the revoke's revision, gone at it
    old = pair.same("kv", "Range", pb.RangeRequest(key=b"r/", range_end=b"r0", revision=rev - 1))
    assert [kv.key for kv in old.kvs] == [b"r/1", b"r/2", b"r/4", b"r/5", b"r/6"]
    pair.same("kv", "Range", pb.RangeRequest(key=b"r/1", revision=rev))

    pair.same("lease", "LeaseRevoke", revoke(2001))  # gone
    assert pair.same("lease", "LeaseTimeToLive", ttl_req(2001, keys=True)).TTL == -1
    pair.same("kv", "Put", put(b"r/7", 2001))
    # a lease without keys: revoked without a new revision
    pair.same("lease", "LeaseRevoke", revoke(2002))  # r/4 goes: one more revision
    pair.same("lease", "LeaseGrant", grant(60, 2003))
    resp = pair.same("lease", "LeaseRevoke", revoke(2003))
    assert resp.header.revision == rev + 1


def test_keep_alive_stream(pair):
    pair.same("lease", "LeaseGrant", grant(45, 3001))
    a = pair.etcd.keep_alive([3001, 999999, 3001, -3])
    b = pair.brain.keep_alive([3001, 999999, 3001, -3])
    assert [normalize(x) for x in a] == [normalize(x) for x in b]
    assert [x.TTL for x in b] == [45, 0, 45, 0]
    pair.same("lease", "LeaseTimeToLive", ttl_req(3001))
    pair.same("lease", "LeaseRevoke", revoke(3001))
    assert [x.TTL for x in pair.brain.keep_alive([3001])] == [0]


def test_time_to_live_and_leases_list(pair):
    for lease_id, ttl in [(4001, 300), (4002, 100), (4003, 200)]:
        pair.same("lease", "LeaseGrant", grant(ttl, lease_id))
    pair.same("kv", "Put", put(b"t/a", 4003))
    pair.same("kv", "Put", put(b"t/b", 4003))
    listed = pair.same("lease", "LeaseLeases", pb.LeaseLeasesRequest())
    assert [x.ID for x in listed.leases] == [4002, 4003, 4001]  # soonest expiry first
    for lease_id in (4001, 4002, 4003, 777):
        for keys in (False, True):
            pair.same("lease", "LeaseTimeToLive", ttl_req(lease_id, keys))
    for lease_id in (4001, 4002, 4003):
        pair.same("lease", "LeaseRevoke", revoke(lease_id))
    assert not pair.same("lease", "LeaseLeases", pb.LeaseLeasesRequest()).leases


def test_time_to_live_of_a_lease_with_many_keys(pair):
    """More keys than brain puts into a message on the event loop
    (MANY_KEYS): the answer is framed in pieces on a thread, and equals
    etcd's."""
    n = MANY_KEYS + 300
    pair.same("lease", "LeaseGrant", grant(300, 6001))
    for side in (pair.etcd, pair.brain):
        for i in range(0, n, 128):
            ops = [pb.RequestOp(request_put=put(b"many/%05d" % j, 6001)) for j in range(i, min(n, i + 128))]
            side.kv.Txn(pb.TxnRequest(success=ops), timeout=10)
    assert len(pair.same("lease", "LeaseTimeToLive", ttl_req(6001, True)).keys) == n
    pair.same("lease", "LeaseRevoke", revoke(6001))


def test_keys_in_pieces_are_protobufs_own_encoding():
    keys = [b"k%d" % i for i in range(10)] + [b"x" * 2000, b""]
    whole = pb.LeaseTimeToLiveResponse(ID=7, TTL=5, grantedTTL=9, keys=keys)
    whole.header.revision = 12
    head = pb.LeaseTimeToLiveResponse(ID=7, TTL=5, grantedTTL=9)
    head.header.revision = 12
    pieces = _KEYS.pieces(head.SerializeToString(), keys, b"", 3)
    assert len(pieces.parts) == 6 and pieces.size == len(pieces.join())
    assert pieces.join() == whole.SerializeToString()


def _wait_gone(side: Side, key: bytes, start: float, limit: float) -> float:
    while time.monotonic() - start < limit:
        if not side.kv.Range(pb.RangeRequest(key=key), timeout=5).kvs:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{side.srv.kind}: {key!r} still there {limit} s after its lease's grant")


def test_expiry_deletes_keys_on_both(pair):
    ttl = 2
    starts = {}
    revs = {}
    for side in (pair.etcd, pair.brain):
        revs[side] = side.kv.Range(pb.RangeRequest(key=b"x"), timeout=5).header.revision
        starts[side] = time.monotonic()
        side.lease.LeaseGrant(grant(ttl, 5001), timeout=5)
        side.lease.LeaseGrant(grant(ttl, 5002), timeout=5)  # no keys: no revision
        for k in (b"x/1", b"x/2", b"x/3"):
            side.kv.Put(put(k, 5001), timeout=5)
    for side in (pair.etcd, pair.brain):
        took = _wait_gone(side, b"x/1", starts[side], ttl + 2.5)
        assert took >= ttl - 0.5, f"{side.srv.kind} expired the lease early ({took:.2f} s)"
        # expiry of an empty lease makes no revision: wait until it is gone too
        while side.lease.LeaseTimeToLive(ttl_req(5002), timeout=5).TTL != -1:
            assert time.monotonic() - starts[side] < ttl + 3
            time.sleep(0.05)
        resp = side.kv.Range(pb.RangeRequest(key=b"x/", range_end=b"x0"), timeout=5)
        assert not resp.kvs
        assert resp.header.revision == revs[side] + 3 + 1, side.srv.kind  # 3 puts, 1 expiry
    pair.same("lease", "LeaseTimeToLive", ttl_req(5001, keys=True))
    assert [x.TTL for x in pair.brain.keep_alive([5001])] == [0]
    pair.same("kv", "Range", pb.RangeRequest(key=b"x/", range_end=b"x0", revision=revs[pair.brain] + 3))
