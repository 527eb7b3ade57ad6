"""Leases across a brain restart on the same data directory, after SIGTERM
and after SIGKILL: leases and their attached keys are still there, every
lease has its full TTL again (etcd's behaviour), time-to-live and keep-alive
answer, and leases still expire and can be revoked."""
from __future__ import annotations

import time

from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc
from servers import ServerProcess, brain_server


class Client:
    def __init__(self, srv: ServerProcess) -> None:
        self.channel = srv.channel()
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def grant(self, ttl: int, lease_id: int = 0) -> int:
        return self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl, ID=lease_id), timeout=10).ID

    def put(self, key: bytes, lease: int = 0) -> int:
        return self.kv.Put(pb.PutRequest(key=key, value=b"v", lease=lease), timeout=10).header.revision

    def ttl(self, lease_id: int) -> pb.LeaseTimeToLiveResponse:
        return self.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout=10)

    def keys(self, prefix: bytes) -> list[bytes]:
        resp = self.kv.Range(pb.RangeRequest(key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1])), timeout=10)
        return [kv.key for kv in resp.kvs]

    def rev(self) -> int:
        return self.kv.Range(pb.RangeRequest(key=b"-"), timeout=10).header.revision

    def leases(self) -> set[int]:
        return {x.ID for x in self.lease.LeaseLeases(pb.LeaseLeasesRequest(), timeout=10).leases}

    def keep_alive(self, lease_id: int) -> int:
        it = self.lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=lease_id)]), timeout=10)
        return next(it).TTL


def test_leases_survive_sigterm_and_sigkill(tmp_path):
    srv = brain_server(str(tmp_path)).start()
    try:
        with Client(srv) as c:
            long = c.grant(3600, 7001)
            auto = c.grant(600)  # a server-chosen id
            for k in (b"a/1", b"a/2", b"a/3"):
                c.put(k, long)
            c.put(b"a/3")  # detached before the restart
            c.put(b"b/1", auto)
            time.sleep(1.1)  # so a renewed TTL is told apart from the original
            assert c.ttl(long).TTL <= 3598

        srv.stop()  # SIGTERM
        srv.start()
        with Client(srv) as c:
            assert c.leases() == {long, auto}
            t = c.ttl(long)
            assert t.grantedTTL == 3600 and 3599 <= t.TTL <= 3600  # full TTL again
            assert sorted(t.keys) == [b"a/1", b"a/2"]
            assert list(c.ttl(auto).keys) == [b"b/1"]
            assert c.keep_alive(long) == 3600
            c.put(b"a/4", long)  # the lease is live for Put
            short = c.grant(3, 7002)
            c.put(b"d/1", short)
            c.put(b"d/2", short)

        srv.kill()  # SIGKILL, right after the grant and the puts were acknowledged
        srv.start()
        restarted = time.monotonic()
        with Client(srv) as c:
            assert c.leases() == {long, auto, short}
            assert sorted(c.ttl(short).keys) == [b"d/1", b"d/2"]
            assert c.ttl(short).TTL >= 2  # the full 3 s again, not what was left
            assert sorted(c.ttl(long).keys) == [b"a/1", b"a/2", b"a/4"]
            rev = c.rev()
            while c.keys(b"d/"):
                assert time.monotonic() - restarted < 3 + 2.5, "the lease did not expire after the restart"
                time.sleep(0.05)
            assert time.monotonic() - restarted >= 2.0
            assert c.rev() == rev + 1  # both keys, one revision
            assert c.ttl(short).TTL == -1 and c.keep_alive(short) == 0
            assert c.keys(b"a/") == [b"a/1", b"a/2", b"a/3", b"a/4"]
            revoke = c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=long), timeout=10)
            assert revoke.header.revision == rev + 2
            assert c.keys(b"a/") == [b"a/3"]

        # and the revoke and the expiry stay done after another crash
        srv.kill()
        srv.start()
        with Client(srv) as c:
            assert c.leases() == {auto}
            assert c.keys(b"a/") == [b"a/3"] and c.keys(b"d/") == []
            assert c.rev() == rev + 2
    finally:
        srv.stop()
