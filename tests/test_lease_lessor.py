"""The lessor in-process, over the MVCC store on real engines: grant rules,
attachment tracking, revoke in one revision, expiry, restart, the race
between a revoke and Puts naming the lease, and finishing an interrupted
revoke at startup."""
from __future__ import annotations

import asyncio
import time

import pytest

from brain.errors import DomainError, RequestTimeoutError
from brain.lease.errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError
from brain.apply.txn import apply_delete, apply_put, apply_txn
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.lease import MAX_TTL, Lessor
from brain.lease import attachments
from brain import sorting
from brain.lease.expiry import ExpiryQueue
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from engines import open_engine
from engines.base import WriteBatch


@pytest.fixture(params=["leveldb", "memory"])
def engine_name(request):
    return request.param


def run(coro):
    return asyncio.run(coro)


class Node:
    """engine + store + lessor, wired as the server wires them."""

    def __init__(self, engine_name: str, data_dir: str, **lessor_args) -> None:
        self.engine_name = engine_name
        self.data_dir = data_dir
        self.lessor_args = lessor_args

    async def open(self) -> Node:
        self.engine = open_engine(self.engine_name, data_dir=self.data_dir)
        await self.attach()
        return self

    async def attach(self) -> None:
        self.store = await MVCCStore.open(self.engine)
        self.lessor = await Lessor.open(self.store, **self.lessor_args)
        self.store.lease_exists = self.lessor.exists

    async def detach(self) -> None:
        await self.lessor.stop()
        await self.store.close()

    async def close(self) -> None:
        await self.detach()
        await self.engine.close()

    async def put(self, key: bytes, lease: int = 0, value: bytes = b"v") -> pb.PutResponse:
        req = pb.PutRequest(key=key, value=value, lease=lease)
        return await self.store.write(lambda txn: apply_put(txn, req))

    async def get(self, key: bytes, rev: int = 0) -> kv_pb2.KeyValue | None:
        rr = await self.store.view.range(key, None, rev)
        return kv_pb2.KeyValue.FromString(rr.kvs[0]) if rr.kvs else None

    async def live(self) -> dict[bytes, kv_pb2.KeyValue]:
        items = await self.store.view.snapshot.scan(K.INDEX, K.INDEX_END)
        return {k[1:]: kv_pb2.KeyValue.FromString(v) for k, v in items}


class LoopTurns:
    """Counts the turns of the event loop while it runs (a task that yields
    at every turn), to tell work done in slices from work done at once."""

    def __init__(self) -> None:
        self.turns = 0
        self._stop = False
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while not self._stop:
            self.turns += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop = True
        await self._task


@pytest.fixture
def node(engine_name, tmp_path):
    return Node(engine_name, str(tmp_path / "data"), min_ttl=1)


def test_grant_rules(node):
    async def main():
        n = await node.open()
        lessor = n.lessor
        a = await lessor.grant(0, 30)
        assert a.id > 0 and a.ttl == 30
        b = await lessor.grant(77, 0)
        assert (b.id, b.ttl) == (77, 1)  # raised to the minimum
        c = await lessor.grant(-5, -10)
        assert (c.id, c.ttl) == (-5, 1)  # negative ids are ids like any other
        for lease_id, ttl, err in [(77, 10, LeaseExistsError), (78, MAX_TTL + 1, LeaseTTLTooLargeError)]:
            with pytest.raises(DomainError) as e:
                await lessor.grant(lease_id, ttl)
            assert isinstance(e.value, err)
        assert lessor.lookup(78) is None
        assert {x.id for x in lessor.leases()} == {a.id, 77, -5}
        # soonest expiry first
        assert [x.id for x in lessor.leases()][-1] == a.id
        # server-chosen ids are unique
        ids = {(await lessor.grant(0, 30)).id for _ in range(50)}
        assert len(ids) == 50 and all(i > 0 for i in ids)
        # concurrent grants of one id: exactly one wins
        results = await asyncio.gather(*(lessor.grant(500, 30) for _ in range(5)), return_exceptions=True)
        assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
        assert all(isinstance(r, LeaseExistsError) for r in results if isinstance(r, BaseException))
        assert n.store.rev == 1  # leases consume no revision
        await n.close()

    run(main())


def test_attach_detach_and_revoke_in_one_revision(node):
    async def main():
        n = await node.open()
        lessor = n.lessor
        a = await lessor.grant(1, 60)
        b = await lessor.grant(2, 60)
        for k in (b"k1", b"k2", b"k3", b"k4"):
            await n.put(k, a.id)
        await n.put(b"k2")  # a Put without a lease detaches
        await n.put(b"k3", b.id)  # moves to another lease
        req = pb.DeleteRangeRequest(key=b"k4")
        await n.store.write(lambda txn: apply_delete(txn, req))  # deleted: detached
        # a txn put attaches too
        t = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k5", lease=a.id))])
        await n.store.write(lambda txn: apply_txn(txn, t))
        assert (await lessor.keys(a.id)) == [b"k1", b"k5"]
        assert (await lessor.keys(b.id)) == [b"k3"]
        before = n.store.rev
        rev = await lessor.revoke(a.id)
        assert rev == before + 1 == n.store.rev  # both keys in one revision
        assert await n.get(b"k1") is None and await n.get(b"k5") is None
        assert (await n.get(b"k1", before)).lease == a.id
        assert sorted(await n.live()) == [b"k2", b"k3"]
        assert lessor.lookup(a.id) is None and (await lessor.keys(a.id)) == []
        assert not n.store.lease_exists(a.id)
        with pytest.raises(DomainError) as e:
            await lessor.revoke(a.id)
        assert isinstance(e.value, LeaseNotFoundError)
        with pytest.raises(DomainError) as e:
            await n.put(b"k9", a.id)
        assert isinstance(e.value, LeaseNotFoundError)
        # a lease without keys is revoked without a new revision
        c = await lessor.grant(3, 60)
        assert await lessor.revoke(c.id) == n.store.rev == before + 1
        # the record is gone from the engine too
        assert await n.engine.get(K.lease_key(a.id)) is None
        assert await n.engine.get(K.lease_key(b.id)) is not None
        await n.close()

    run(main())


def test_revoke_racing_puts_leaves_no_key_on_a_dead_lease(node):
    """Puts naming the lease are queued before, with and after the revoke;
    whatever order the writer applies them in, no live key may name the
    revoked lease afterwards."""

    async def main():
        n = await node.open()
        for round_ in range(5):
            lease = await n.lessor.grant(100 + round_, 60)

            async def put(i: int):
                try:
                    await n.put(b"r%d/%03d" % (round_, i), lease.id)
                except DomainError as e:
                    assert isinstance(e, LeaseNotFoundError)

            tasks = [asyncio.ensure_future(put(i)) for i in range(100)]
            await asyncio.sleep(0)
            revoke = asyncio.ensure_future(n.lessor.revoke(lease.id))
            tasks += [asyncio.ensure_future(put(i)) for i in range(100, 200)]
            await asyncio.gather(revoke, *tasks)
            live = await n.live()
            assert not [k for k, kv in live.items() if kv.lease == lease.id]
            assert (await n.lessor.keys(lease.id)) == []
        await n.close()

    run(main())


def test_expiry_deletes_keys_in_one_revision_per_lease(node):
    async def main():
        n = await node.open()
        lessor = n.lessor
        with_keys = [await lessor.grant(10 + i, 1) for i in range(3)]
        empty = await lessor.grant(20, 1)
        kept = await lessor.grant(30, 60)
        for lease in with_keys:
            for j in range(3):
                await n.put(b"e%d/%d" % (lease.id, j), lease.id)
        await n.put(b"kept", kept.id)
        before = n.store.rev
        start = time.monotonic()
        while lessor.lookup(10) or lessor.lookup(11) or lessor.lookup(12) or lessor.lookup(20):
            assert time.monotonic() - start < 3, "leases did not expire"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        assert time.monotonic() - start >= 0.8
        assert n.store.rev == before + 3  # one per lease with keys, none for the empty one
        assert sorted(await n.live()) == [b"kept"]
        assert lessor.lookup(empty.id) is None and lessor.expired == 4
        with pytest.raises(DomainError):
            await lessor.renew(10)
        await n.close()

    run(main())


def test_keepalive_defers_expiry_and_waits_for_a_pending_revoke(node):
    async def main():
        n = await node.open()
        lessor = n.lessor
        lease = await lessor.grant(1, 1)
        await n.put(b"k", lease.id)
        for _ in range(6):  # 1.5 s of keep-alives on a 1 s lease
            await asyncio.sleep(0.25)
            assert await lessor.renew(1) == 1
        assert lessor.lookup(1) is not None and (await n.get(b"k")) is not None
        # heap entries from renewals do not pile up
        for _ in range(1000):
            await lessor.renew(1)
        await asyncio.sleep(0.05)
        assert len(lessor._queue) < 200
        # expire it for real; a renewal after the deadline reports it gone
        await asyncio.sleep(1.05)
        with pytest.raises(DomainError) as e:
            await lessor.renew(1)
        assert isinstance(e.value, LeaseNotFoundError)
        assert await n.get(b"k") is None
        await n.close()

    run(main())


def test_restart_renews_full_ttl_and_keeps_attachments(tmp_path):
    async def main():
        n = await Node("leveldb", str(tmp_path / "d"), min_ttl=1).open()
        long = await n.lessor.grant(1, 3600)
        short = await n.lessor.grant(2, 2)
        await n.put(b"a", long.id)
        await n.put(b"b", short.id)
        await n.put(b"c", long.id)
        await n.put(b"c")  # detached before the restart
        await asyncio.sleep(1.0)
        await n.close()

        n = await Node("leveldb", str(tmp_path / "d"), min_ttl=1).open()
        lessor = n.lessor
        assert {x.id: x.ttl for x in lessor.leases()} == {1: 3600, 2: 2}
        assert lessor.remaining(lessor.lookup(2)) == 1  # full TTL again: int(1.99..)
        assert (await lessor.keys(1)) == [b"a"] and (await lessor.keys(2)) == [b"b"]
        rev = n.store.rev
        start = time.monotonic()
        while lessor.lookup(2) is not None:
            assert time.monotonic() - start < 3.5
            await asyncio.sleep(0.02)
        assert time.monotonic() - start > 1.5
        await asyncio.sleep(0.05)
        assert n.store.rev == rev + 1 and sorted(await n.live()) == [b"a", b"c"]
        await n.close()

    run(main())


def test_startup_finishes_a_revoke_cut_short(engine_name, tmp_path):
    """A crash between deleting a lease's record and deleting its keys
    leaves keys naming a lease without a record; the next start deletes
    them, in one revision, before serving."""

    async def main():
        n = await Node(engine_name, str(tmp_path / "d")).open()
        await n.lessor.grant(9, 60)
        await n.put(b"x", 9)
        await n.put(b"y", 9)
        await n.put(b"z")
        await n.detach()
        wb = WriteBatch()
        wb.delete(K.lease_key(9))
        await n.engine.write(wb)  # the state a crash mid-revoke leaves
        rev = n.store.rev
        await n.attach()
        assert n.store.rev == rev + 1
        assert sorted(await n.live()) == [b"z"]
        assert n.lessor.lookup(9) is None and (await n.lessor.keys(9)) == []
        await n.close()

    run(main())


def test_revoke_cut_short_is_finished_later(tmp_path):
    """The record is deleted, the key deletion does not go through: the
    lease is gone at once, its id stays taken, and a retry deletes its keys."""

    async def main():
        n = await Node("memory", "", retry_interval=0.2).open()
        await n.lessor.grant(5, 60)
        await n.put(b"k", 5)
        real = n.lessor._delete_attached
        failures = []

        async def failing(txn, lease_id):
            if not failures:
                failures.append(lease_id)
                raise RequestTimeoutError()
            await real(txn, lease_id)

        n.lessor._delete_attached = failing
        with pytest.raises(DomainError):
            await n.lessor.revoke(5)
        assert failures == [5]
        assert n.lessor.lookup(5) is None and not n.store.lease_exists(5)
        assert await n.engine.get(K.lease_key(5)) is None
        with pytest.raises(DomainError) as e:
            await n.lessor.grant(5, 60)  # its revoke is not finished
        assert isinstance(e.value, LeaseExistsError)
        rev = n.store.rev
        start = time.monotonic()
        while (await n.get(b"k")) is not None:
            assert time.monotonic() - start < 3
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        assert n.store.rev == rev + 1
        assert (await n.lessor.grant(5, 60)).id == 5
        await n.close()

    run(main())


def test_expiry_queue_order_and_rebuild():
    q = ExpiryQueue()
    for i, d in enumerate([5.0, 1.0, 3.0, 1.0, 9.0]):
        q.push(i, d)
    assert q.next_deadline() == 1.0
    assert q.pop_due(3.0, 10) == [1, 3, 2]
    assert q.pop_due(100.0, 1) == [0]
    q.rebuild([(2.0, 7), (1.5, 8)])
    assert q.pop_due(10.0, 10) == [8, 7] and q.next_deadline() is None


def test_a_detached_lessor_no_longer_follows_commits(node):
    """A member that stops leading detaches its lessor (brain/cluster/node.py):
    commits after that no longer reach it, and the store tells the lessor's
    successor alone."""
    async def main():
        n = await node.open()
        lessor = n.lessor
        lease = await lessor.grant(1, 60)
        await n.put(b"a", lease.id)
        assert (await lessor.keys(1)) == [b"a"]
        await lessor.stop()
        lessor.detach()
        await n.put(b"b", lease.id)
        await n.put(b"a")  # detached from the lease
        assert (await lessor.keys(1)) == [b"a"]  # as it was at the detach
        successor = await Lessor.open(n.store, min_ttl=1)
        assert (await successor.keys(1)) == [b"b"]
        await n.put(b"c", lease.id)
        assert (await successor.keys(1)) == [b"b", b"c"] and (await lessor.keys(1)) == [b"a"]
        await successor.stop()
        await n.store.close()
        await n.engine.close()

    run(main())


def test_a_large_commit_is_followed_in_slices_and_a_revoke_waits_for_it(node, monkeypatch):
    """A commit attaching or detaching more keys than APPLY_SLICE is
    followed a slice per turn of the event loop (other tasks run between
    the slices), and a revoke started as soon as it is written, while it
    is still being followed, deletes every key it attached, in one
    revision (APPLY_SLICE made small, so the commit takes 40 turns)."""
    monkeypatch.setattr(attachments, "APPLY_SLICE", 64)

    async def main():
        n = await node.open()
        lessor = n.lessor
        lease = await lessor.grant(1, 60)
        keys = [b"k%05d" % i for i in range(40 * 64 + 5)]

        async def put_all(txn):
            for k in keys:
                await apply_put(txn, pb.PutRequest(key=k, value=b"v", lease=lease.id))

        loop_turns = LoopTurns()
        await n.store.write(put_all)
        assert lessor._attached.updating  # followed in slices, not at once
        turns_before = loop_turns.turns
        await lessor._attached.settled()
        assert loop_turns.turns - turns_before >= 2  # the loop ran other tasks between the slices
        assert (await lessor.keys(lease.id)) == keys

        # a revoke started as soon as a big commit attaching keys to its
        # lease is written, while the commit is still being followed
        other = await lessor.grant(2, 60)
        more = [b"m%05d" % i for i in range(40 * 64)]

        async def put_more(txn):
            for k in more:
                await apply_put(txn, pb.PutRequest(key=k, value=b"v", lease=other.id))

        await n.store.write(put_more)
        assert lessor._attached.updating  # the revoke below starts while it is followed
        revoked_at = await lessor.revoke(other.id)
        assert revoked_at == n.store.rev
        assert sorted(await n.live()) == keys  # every key of the big commit went with the revoke
        # the revoke of the first lease: its many deletes followed in slices too
        assert await lessor.revoke(lease.id) == revoked_at + 1
        assert (await lessor.keys(lease.id)) == [] and await n.live() == {}
        assert len(lessor._attached) == 0
        await loop_turns.stop()
        await n.close()

    run(main())


def test_a_lease_with_many_keys_is_sorted_in_runs(node, monkeypatch):
    """A lease's keys are sorted a run per turn of the loop, never in one
    sort: TimeToLive's key list and a revoke's deletes (in key order, as
    etcd's) come out whole and in order, the loop turning between runs
    (SORT_RUN made small; a put not yet committed when the revoke starts
    is deleted with the rest)."""
    monkeypatch.setattr(sorting, "SORT_RUN", 16)

    async def main():
        n = await node.open()
        lessor = n.lessor
        lease = await lessor.grant(1, 60)
        keys = [b"k%04d" % i for i in range(300)]
        shuffled = keys[::7] + [k for i, k in enumerate(keys) if i % 7]

        async def put_all(txn):
            for k in shuffled:
                await apply_put(txn, pb.PutRequest(key=k, value=b"v", lease=lease.id))

        await n.store.write(put_all)
        loop_turns = LoopTurns()
        await asyncio.sleep(0)
        turns_before = loop_turns.turns
        assert await lessor.keys(lease.id) == keys
        assert loop_turns.turns - turns_before >= 300 // 16  # a turn of the loop per run, at least
        deleted: list[bytes] = []
        n.store.add_listener(lambda changes, rev: deleted.extend(c.key for c in changes if c.deleted))
        late = n.put(b"k0150x", lease.id)  # applied before the revoke, in the same batch or the one before
        revoked = asyncio.ensure_future(lessor.revoke(lease.id))
        await late
        await revoked
        assert deleted == sorted(keys + [b"k0150x"])  # in key order, the late key among the others
        assert await n.live() == {}
        await loop_turns.stop()
        await n.close()

    run(main())
