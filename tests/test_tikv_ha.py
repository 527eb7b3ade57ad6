"""Several `brain serve --engine tikv` processes on one key prefix of the fake
PD + TiKV (tests/tikv_fake): one leader elected through the engine, writes
forwarded to it from any member, one revision sequence, reads on followers
that never go back in time, watches on followers, and failover when the
leader is SIGKILLed or paused (SIGSTOP) past its lease. Time bounds are
printed, never asserted. Skips, saying so, where tikv-client has no wheel."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ha_cluster import (CALL_TIMEOUT, Watcher, Writer, by_id, channel, check_history, cluster, first_ack_after, get, kv, member_list, put, revisions, status,
                        wait_leader)
from tikv_fake.process import FakeTikvProcess

from brain.errors import DomainError
from brain.cluster.election import Election
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from engines.tikv import open_tikv
from servers import etcd_tool


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
            print(f"takeover: the first write acknowledged {first_ack_after([writer], killed_at):.2f}s after the SIGKILL; "
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
