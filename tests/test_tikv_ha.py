"""Several `brain serve --engine tikv` processes on one key prefix of the fake
PD + TiKV (tests/tikv_fake): one leader elected through the engine, writes
forwarded to it from any member, one revision sequence, reads on followers
that never go back in time, watches on followers, and failover when the
leader is SIGKILLed or paused (SIGSTOP) past its lease. Time bounds are
printed, never asserted. Skips, saying so, where tikv-client has no wheel."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from tikv_fake.process import FakeTikvProcess

from brain.errors import DomainError
from brain.cluster.election import Election
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from engines.tikv import open_tikv
from servers import ServerProcess, brain_server, etcd_tool

CALL_TIMEOUT = 25.0


def member(tmp_path: Path, fake: FakeTikvProcess, name: str, transport: str) -> ServerProcess:
    srv = brain_server(str(tmp_path), "--name", name, "--tikv-pd-endpoints", fake.pd_endpoint, "--transport", transport, engine="tikv")
    srv.argv += ["--advertise-client-urls", srv.url]
    return srv


@contextmanager
def cluster(tmp_path: Path, fake: FakeTikvProcess, n: int = 3, transport: str = "h2") -> Iterator[list[ServerProcess]]:
    members = [member(tmp_path, fake, f"m{i}", transport) for i in range(n)]
    try:
        for m in members:
            m.start()
        yield members
    finally:
        for m in members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)  # a paused one must be able to stop
            m.stop()


@functools.lru_cache(maxsize=None)
def _channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint)


def channel(srv: ServerProcess) -> grpc.Channel:
    return _channel(srv.endpoint)


def kv(srv: ServerProcess) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(channel(srv))


def status(srv: ServerProcess) -> rpc_pb2.StatusResponse:
    return rpc_pb2_grpc.MaintenanceStub(channel(srv)).Status(rpc_pb2.StatusRequest(), timeout=5)


def wait_leader(members: list[ServerProcess], limit: float = 30.0, not_id: int = 0) -> tuple[int, float]:
    """The leader's member id once every given member names the same one
    (other than not_id), and how long that took."""
    start = time.monotonic()
    while True:
        try:
            leaders = {status(m).leader for m in members}
        except grpc.RpcError:
            leaders = set()
        if len(leaders) == 1 and 0 not in leaders and not_id not in leaders:
            return leaders.pop(), time.monotonic() - start
        assert time.monotonic() - start < limit, f"no agreed leader after {limit}s: {leaders}"
        time.sleep(0.1)


def member_list(srv: ServerProcess) -> list[rpc_pb2.Member]:
    return list(rpc_pb2_grpc.ClusterStub(channel(srv)).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members)


def by_id(members: list[ServerProcess], member_id: int) -> ServerProcess:
    for m in members:
        if status(m).header.member_id == member_id:
            return m
    raise AssertionError(f"no member {member_id:x}")


def put(srv: ServerProcess, key: str, value: str) -> int:
    return kv(srv).Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=CALL_TIMEOUT).header.revision


def get(srv: ServerProcess, key: str, serializable: bool = False) -> rpc_pb2.RangeResponse:
    return kv(srv).Range(rpc_pb2.RangeRequest(key=key.encode(), serializable=serializable), timeout=CALL_TIMEOUT)


def revisions(srv: ServerProcess, prefix: str) -> dict[str, int]:
    """key -> mod revision of every live key under prefix."""
    p = prefix.encode()
    resp = kv(srv).Range(rpc_pb2.RangeRequest(key=p, range_end=p[:-1] + bytes([p[-1] + 1])), timeout=CALL_TIMEOUT)
    return {x.key.decode(): x.mod_revision for x in resp.kvs}


@dataclass
class Watcher:
    """A gRPC watch on one member from a start revision: (revision, type, key) per event."""

    srv: ServerProcess
    prefix: str
    start_rev: int
    events: list[tuple[int, int, str]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Watcher:
        p = self.prefix.encode()
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=p, range_end=p[:-1] + bytes([p[-1] + 1]), start_revision=self.start_rev))

        def requests() -> Iterator[rpc_pb2.WatchRequest]:
            yield create
            self._stop.wait()

        def run() -> None:
            try:
                self._call = rpc_pb2_grpc.WatchStub(self.srv.channel()).Watch(requests())
                for resp in self._call:
                    for ev in resp.events:
                        self.events.append((ev.kv.mod_revision, ev.type, ev.kv.key.decode()))
            except grpc.RpcError as e:
                if not self._stop.is_set():
                    self.error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def wait_for(self, rev: int, limit: float = 30.0) -> list[tuple[int, int, str]]:
        deadline = time.monotonic() + limit
        while not self.events or self.events[-1][0] < rev:
            assert self.error is None, f"watch failed: {self.error}"
            assert time.monotonic() < deadline, f"watch saw up to {self.events[-1:]} of {rev}"
            time.sleep(0.05)
        return list(self.events)

    def stop(self) -> None:
        self._stop.set()
        call = getattr(self, "_call", None)
        if call is not None:
            call.cancel()


@dataclass
class Writer:
    """Puts of fresh keys, each through the next member; on an error the
    same write goes to the next member as a new key. Keeps the acknowledged
    (key, revision) pairs."""

    members: list[ServerProcess]
    prefix: str
    acked: list[tuple[str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Writer:
        def run() -> None:
            i = attempt = 0
            while not self._stop.is_set():
                srv = self.members[(i + attempt) % len(self.members)]
                key = f"{self.prefix}{i:05d}-{attempt}"
                try:
                    self.acked.append((key, put(srv, key, "v")))
                    i += 1
                    attempt = 0
                except grpc.RpcError as e:
                    self.errors.append(f"{srv.port}: {e.code()} {e.details()}")
                    attempt += 1
                    time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def wait_acks(self, n: int, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} writes acknowledged: {self.errors[-5:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CALL_TIMEOUT * 2)


def check_history(srv: ServerProcess, prefix: str, start_rev: int, acked: list[tuple[str, int]]) -> int:
    """Every revision after start_rev is exactly one stored key of the
    prefix (no gap, none used twice), every acknowledged write is there at
    its revision. Returns the last revision."""
    stored = revisions(srv, prefix)
    revs = sorted(stored.values())
    assert revs == list(range(start_rev + 1, start_rev + 1 + len(revs))), f"revisions not consecutive: {revs}"
    for key, rev in acked:
        assert stored.get(key) == rev, f"acknowledged {key} at {rev}, stored at {stored.get(key)}"
    return revs[-1]


@pytest.mark.parametrize("transport", ["h2", "grpcio"])
def test_three_members_one_revision_sequence(tmp_path: Path, fake_tikv: FakeTikvProcess, transport: str):
    with cluster(tmp_path, fake_tikv, transport=transport) as members:
        leader_id, took = wait_leader(members)
        print(f"leader {leader_id:x} agreed after {took:.2f}s")
        start = get(members[0], "x").header.revision
        last = start
        for i in range(9):
            writer, reader = members[i % 3], members[(i + 1) % 3]
            rev = put(writer, f"/a/{i}", str(i))
            assert rev == last + 1, "one revision sequence across the members"
            last = rev
            # linearizable: a read on another member right after the ack sees it
            got = get(reader, f"/a/{i}")
            assert [(x.value, x.mod_revision) for x in got.kvs] == [(str(i).encode(), rev)]
            assert got.header.revision >= rev
        # a read-modify-write Txn and a delete, through followers
        follower = next(m for m in members if status(m).header.member_id != leader_id)
        txn = kv(follower).Txn(rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"/a/0", target=rpc_pb2.Compare.VALUE, value=b"0")],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/a/0", value=b"zero"))]), timeout=CALL_TIMEOUT)
        assert txn.succeeded and txn.header.revision == last + 1
        deleted = kv(follower).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/a/1"), timeout=CALL_TIMEOUT)
        assert deleted.deleted == 1 and deleted.header.revision == last + 2
        # leases live on the leader: granted, attached, kept alive and revoked through a follower
        leases = rpc_pb2_grpc.LeaseStub(channel(follower))
        lease = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=CALL_TIMEOUT)
        kv(follower).Put(rpc_pb2.PutRequest(key=b"/a/leased", value=b"x", lease=lease.ID), timeout=CALL_TIMEOUT)
        kept = next(leases.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease.ID)]), timeout=CALL_TIMEOUT))
        assert kept.ID == lease.ID and kept.TTL == 30
        leases.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease.ID), timeout=CALL_TIMEOUT)
        assert not get(follower, "/a/leased").kvs
        # etcdctl sees the cluster as etcd's
        env = dict(os.environ, ETCDCTL_API="3")
        listed = subprocess.run([etcd_tool("etcdctl"), f"--endpoints={members[0].endpoint}", "member", "list", "-w", "json"],
                                capture_output=True, text=True, env=env, timeout=30)
        assert listed.returncode == 0, listed.stderr
        assert sorted(m["name"] for m in json.loads(listed.stdout)["members"]) == ["m0", "m1", "m2"]
        statuses = subprocess.run([etcd_tool("etcdctl"), f"--endpoints={members[1].endpoint}", "endpoint", "status", "--cluster", "-w", "json"],
                                  capture_output=True, text=True, env=env, timeout=30)
        assert statuses.returncode == 0, statuses.stderr
        rows = json.loads(statuses.stdout)
        assert len(rows) == 3 and {r["Status"]["leader"] for r in rows} == {leader_id}
        assert sum(r["Status"]["header"]["member_id"] == leader_id for r in rows) == 1
        # etcdctl move-leader, sent to the leader, hands the lease to the named member
        target = status(follower).header.member_id
        moved = subprocess.run([etcd_tool("etcdctl"), f"--endpoints={by_id(members, leader_id).endpoint}", "move-leader", f"{target:x}"],
                               capture_output=True, text=True, env=env, timeout=60)
        assert moved.returncode == 0, moved.stderr
        now_id, took = wait_leader(members, not_id=leader_id)
        assert now_id == target
        print(f"leadership moved from {leader_id:x} to {target:x}, agreed after another {took:.2f}s")
        leader_id = target
        assert put(members[0], "/a/moved", "x") > last
        # a leader stopped on purpose hands its lease over at once, and leaves the member list
        leader = by_id(members, leader_id)
        others = [m for m in members if m is not leader]
        leader.stop()
        new_id, took = wait_leader(others, not_id=leader_id)
        print(f"leader {leader_id:x} stopped (SIGTERM); {new_id:x} leads, agreed after {took:.2f}s")
        assert sorted(m.ID for m in member_list(others[0])) == sorted(status(m).header.member_id for m in others)
        assert put(others[0], "/a/after", "x") > last


def test_leader_killed_under_writes(tmp_path: Path, fake_tikv: FakeTikvProcess):
    with cluster(tmp_path, fake_tikv) as members:
        leader_id, _ = wait_leader(members)
        leader = by_id(members, leader_id)
        followers = [m for m in members if m is not leader]
        start = get(members[0], "x").header.revision
        watch = Watcher(followers[0], "/w/", start + 1).start()
        writer = Writer(members, "/w/").start()
        try:
            writer.wait_acks(15)
            leader.kill()
            killed_at = time.monotonic()
            new_id, took = wait_leader(followers, not_id=leader_id)
            print(f"leader {leader_id:x} SIGKILLed; {new_id:x} leads, agreed after {took:.2f}s")
            before = len(writer.acked)
            writer.wait_acks(before + 15)
            print(f"writes acknowledged again {time.monotonic() - killed_at:.2f}s after the kill; "
                  f"{len(writer.errors)} failed tries meanwhile")
        finally:
            writer.stop()
        try:
            last = check_history(followers[1], "/w/", start, writer.acked)
            # the watch through a follower saw every revision once, in order
            events = watch.wait_for(last)
        finally:
            watch.stop()
        assert [e[0] for e in events] == list(range(start + 1, last + 1))
        stored = revisions(followers[1], "/w/")
        assert [(rev, key) for rev, _, key in events] == sorted((rev, key) for key, rev in stored.items())
        # the killed member leaves the member list once its heartbeat is stale
        gone = time.monotonic()
        while leader_id in {m.ID for m in member_list(followers[0])}:
            assert time.monotonic() - gone < 60, "the killed member is still listed"
            time.sleep(0.2)
        print(f"the killed member left the member list {time.monotonic() - killed_at:.2f}s after the kill")


def test_paused_leader_cannot_commit_after_it_resumes(tmp_path: Path, fake_tikv: FakeTikvProcess):
    with cluster(tmp_path, fake_tikv) as members:
        leader_id, _ = wait_leader(members)
        leader = by_id(members, leader_id)
        followers = [m for m in members if m is not leader]
        start = get(members[0], "x").header.revision
        # a writer that only talks to the leader: its calls are in flight when it stops
        to_leader = Writer([leader], "/p/").start()
        to_leader.wait_acks(10)
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            new_id, took = wait_leader(followers, not_id=leader_id)
            print(f"leader {leader_id:x} SIGSTOPped; {new_id:x} leads, agreed after {took:.2f}s")
            others = Writer(followers, "/p/o").start()
            others.wait_acks(10)
            others.stop()
        finally:
            leader.proc.send_signal(signal.SIGCONT)
        print(f"resumed the old leader after {time.monotonic() - paused_at:.2f}s")
        acked_before = len(to_leader.acked)
        # the old leader comes back as a follower: what reaches it is forwarded
        new_leader_seen, took = wait_leader(members)
        assert new_leader_seen == new_id
        to_leader.wait_acks(acked_before + 5)
        to_leader.stop()
        print(f"old leader forwarding again {took:.2f}s after it resumed; its writer's failed tries: {to_leader.errors[:3]}")
        check_history(followers[0], "/p/", start, to_leader.acked + others.acked)


class _StaleLeader:
    """The fence of a leader whose clock has not noticed that it was paused
    past its lease: it still believes it may commit, at its old term."""

    def __init__(self, election: Election) -> None:
        self.election = election

    def admits_writes(self) -> bool:
        return True

    def expectations(self) -> list[tuple[bytes, bytes | None]]:
        return self.election.expectations()


async def _until(predicate, limit: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


def test_the_term_fences_a_deposed_leader_at_the_engine(fake_tikv: FakeTikvProcess):
    """The engine itself refuses the commit of a deposed leader that still
    believes it leads: the revision record still holds what it expects, but
    the term key does not. In process, on two engines of the fake."""

    async def scenario() -> None:
        old_engine = open_tikv(pd_endpoints=fake_tikv.pd_endpoint, key_prefix="fence/")
        new_engine = open_tikv(pd_endpoints=fake_tikv.pd_endpoint, key_prefix="fence/")
        store = await MVCCStore.open(old_engine)
        old = Election(old_engine, 1, "http://old", lease_seconds=0.5, renew_interval=0.1)
        new = Election(new_engine, 2, "http://new", lease_seconds=0.5, renew_interval=0.1)
        try:
            old.start()
            await _until(lambda: old.is_leader)
            store.fence = _StaleLeader(old)
            assert await store.write(lambda txn: txn.put(b"a", b"1", 0)) is not None
            rev = store.rev
            await old.stop(release=False)  # paused: no more renewals
            new.start()
            await _until(lambda: new.is_leader)
            assert new.term == old.term + 1
            with pytest.raises(DomainError):
                await store.write(lambda txn: txn.put(b"a", b"2", 0))
            raw = await new_engine.get(K.META_REVISION)
            assert K.unpack_rev(raw)[0] == rev, "the deposed leader's revision must not land"
        finally:
            await new.stop()
            await store.close()
            await old_engine.close()
            await new_engine.close()

    asyncio.run(scenario())
