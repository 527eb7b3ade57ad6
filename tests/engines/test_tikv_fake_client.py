"""tikv-client's transactional API over the fake PD + TiKV, and the same
scenarios over the in-process double (tikv_double.FakeTikv) where the
double models them, so that the two can be compared.

The same scenario gives the same observations on both unless a test below
says otherwise; where they differ, the test names which is right by TiKV's
rules (the fake, in every case found: the double is a model of the client's
API over a store without locks, the fake runs TiKV's protocol).

The SIGKILL scenarios need the fake: a client process is killed in the
middle of its commit, with its locks left in the cluster, and the next
reader must resolve them (rolled back when the primary was not committed,
committed when it was) through TiKV's lock resolution.
"""
from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
from tikv_double import FakeTikv
from tikv_fake.process import ROOT, FakeTikvProcess, start_fake, tikv_client_missing

# keys whose KvCommit the fake never answers: a client is killed there
STALL_PRIMARY, STALL_SECONDARY, STALL_LONG = "kill1/a", "kill2/b", "hb/a"

Connect = Callable[[], Awaitable[Any]]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTikvProcess]:
    if (why := tikv_client_missing()) is not None:
        pytest.skip(why)
    proc = start_fake(Path(tmp_path_factory.mktemp("fake-client")), stall_commit=(STALL_PRIMARY, STALL_SECONDARY, STALL_LONG))
    yield proc
    proc.stop()


def real_connect(fake: FakeTikvProcess) -> Connect:
    async def connect() -> Any:
        from tikv_client import asynchronous

        return await asynchronous.TransactionClient.connect([fake.pd_endpoint])

    return connect


def double_connect() -> Connect:
    cluster = FakeTikv()

    async def connect() -> Any:
        return await cluster.connect(["double:2379"])

    return connect


@pytest.fixture(params=["fake", "double"])
def connect(request: pytest.FixtureRequest) -> Connect:
    if request.param == "double":
        return double_connect()
    return real_connect(request.getfixturevalue("fake"))


async def _snapshot(client: Any) -> Any:
    return client.snapshot(await client.current_timestamp(), False)


def test_reads_writes_scans_and_rollback(connect):
    async def main() -> None:
        client = await connect()
        txn = await client.begin()
        for k in (b"crud/a", b"crud/b", b"crud/c", b"crud/d"):
            await txn.put(k, k.upper())
        assert dict(await txn.batch_get([b"crud/a", b"crud/x"])) == {b"crud/a": b"CRUD/A"}  # its own writes
        await txn.commit()
        txn = await client.begin()
        await txn.delete(b"crud/b")
        await txn.put(b"crud/c", b"new")
        await txn.commit()
        txn = await client.begin()
        await txn.put(b"crud/e", b"never")
        await txn.rollback()
        snap = await _snapshot(client)
        assert await snap.get(b"crud/a") == b"CRUD/A" and await snap.get(b"crud/b") is None
        assert sorted(await snap.batch_get([b"crud/a", b"crud/b", b"crud/c"])) == [(b"crud/a", b"CRUD/A"), (b"crud/c", b"new")]
        assert await snap.scan(b"crud/", b"crud0", 10) == [(b"crud/a", b"CRUD/A"), (b"crud/c", b"new"), (b"crud/d", b"CRUD/D")]
        assert await snap.scan_keys(b"crud/", b"crud0", 2) == [b"crud/a", b"crud/c"]
        assert await snap.scan_keys(b"crud/a", b"crud/d", 10, include_start=False, include_end=True) == [b"crud/c", b"crud/d"]
        assert await snap.scan(b"crud/", None, 0) == []
        assert await snap.get(b"crud/e") is None

    asyncio.run(main())


def test_a_snapshot_does_not_see_later_commits(connect):
    async def main() -> None:
        client = await connect()
        txn = await client.begin()
        await txn.put(b"si/k", b"v1")
        await txn.commit()
        before = await client.current_timestamp()
        txn = await client.begin()
        await txn.put(b"si/k", b"v2")
        await txn.commit()
        assert await client.snapshot(before, False).get(b"si/k") == b"v1"
        assert await (await _snapshot(client)).get(b"si/k") == b"v2"

    asyncio.run(main())


def test_concurrent_writers_of_a_key_the_second_committer_conflicts(connect):
    async def main() -> None:
        client = await connect()
        first, second = await client.begin(), await client.begin()
        await first.put(b"ww/k", b"first")
        await second.put(b"ww/k", b"second")
        await second.put(b"ww/only-second", b"x")
        await first.commit()
        with pytest.raises(Exception, match="WriteConflict") as caught:
            await second.commit()
        await second.rollback()
        snap = await _snapshot(client)
        assert await snap.get(b"ww/k") == b"first" and await snap.get(b"ww/only-second") is None
        return str(caught.value)

    text = asyncio.run(main())
    conflict = {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", text.split("WriteConflict", 1)[1])}
    # TiKV's conflict_ts is the winner's start_ts, conflict_commit_ts its
    # commit_ts (the engine reads neither: only the word WriteConflict)
    # (here the winner began first, and committed after the loser began)
    assert conflict["conflict_ts"] < conflict["start_ts"] < conflict["conflict_commit_ts"]


def test_a_locked_key_conflicts_with_a_later_write_of_it(connect):
    """lock_keys (Lock mutations) is how brain makes a read part of a
    transaction: a commit of the read key in between fails the transaction."""
    async def main() -> None:
        client = await connect()
        reader = await client.begin()
        await reader.lock_keys([b"rw/read"])
        await reader.put(b"rw/written", b"r")
        writer = await client.begin()
        await writer.put(b"rw/read", b"w")
        await writer.commit()
        with pytest.raises(Exception, match="WriteConflict"):
            await reader.commit()
        await reader.rollback()
        # and a locked key that nobody touched commits without changing it
        txn = await client.begin()
        await txn.lock_keys([b"rw/read"])
        await txn.put(b"rw/written", b"ok")
        await txn.commit()
        snap = await _snapshot(client)
        assert await snap.get(b"rw/read") == b"w" and await snap.get(b"rw/written") == b"ok"

    asyncio.run(main())


def test_reads_at_any_timestamp(fake):
    """TiKV serves a read at any timestamp; the double only at those it
    handed out (it keeps a view per timestamp), which is all the engine
    uses. The fake is right; the double is stricter, so nothing is hidden."""
    async def main(connect: Connect) -> None:
        client = await connect()
        ts = await client.current_timestamp()
        await client.snapshot(ts - 1, False).get(b"any/k")

    asyncio.run(main(real_connect(fake)))
    with pytest.raises(AssertionError, match="never handed out"):
        asyncio.run(main(double_connect()))


# -- a client killed mid-commit (the fake only) ------------------------------

CHILD = textwrap.dedent("""
    import asyncio, sys
    from tikv_client import asynchronous

    async def main(pd, prefix):
        client = await asynchronous.TransactionClient.connect([pd])
        txn = await client.begin()
        await txn.put(prefix + b"/a", b"new")  # the smallest key: the primary
        await txn.put(prefix + b"/b", b"new")
        print("committing", flush=True)
        await txn.commit()  # the fake stalls it; we are killed here
        print("committed", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2].encode()))
""")


def _stalls(fake: FakeTikvProcess) -> int:
    return fake.log_path.read_text(errors="replace").count("stalled KvCommit")


def _stalled_child(fake: FakeTikvProcess, prefix: str) -> subprocess.Popen:
    """CHILD, once the fake has stalled its commit."""
    stalls = _stalls(fake)
    child = subprocess.Popen([sys.executable, "-c", CHILD, fake.pd_endpoint, prefix], cwd=ROOT, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while _stalls(fake) == stalls:
        assert child.poll() is None and time.monotonic() < deadline, "the child never reached its commit"
        time.sleep(0.02)
    return child


def _kill_mid_commit(fake: FakeTikvProcess, prefix: str) -> bool:
    """Run CHILD until the fake stalls its commit, SIGKILL it; whether its
    commit() had returned."""
    child = _stalled_child(fake, prefix)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.stdout is not None
    said = child.stdout.read().split()
    child.stdout.close()
    return b"committed" in said


async def _read_resolving(client: Any, key: bytes, budget: float = 20.0) -> bytes | None:
    """get() at a fresh timestamp, retried while the client reports a lock it
    could not resolve yet (the dead writer's TTL still running)."""
    deadline = time.monotonic() + budget
    while True:
        try:
            return await (await _snapshot(client)).get(key)
        except Exception as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("died", ["before-primary-commit", "after-primary-commit"])
def test_locks_of_a_killed_client_are_resolved_by_the_next_reader(fake, died):
    # the fake stalls the commit of kill1/a (the primary: nothing committed)
    # or of kill2/b (a secondary: the primary kill2/a is committed already)
    prefix = "kill1" if died == "before-primary-commit" else "kill2"
    returned = _kill_mid_commit(fake, prefix)
    # tikv-client's commit() returns once the primary is committed (the
    # transaction is then decided) and commits the secondaries afterwards
    assert returned == (died == "after-primary-commit")
    before = fake.rpc_counts()

    async def read() -> tuple[bytes | None, bytes | None]:
        client = await real_connect(fake)()
        # the secondary first: its lock names the primary, whose state decides
        b = await _read_resolving(client, f"{prefix}/b".encode())
        a = await _read_resolving(client, f"{prefix}/a".encode())
        return a, b

    started = time.monotonic()
    got = asyncio.run(read())
    after = fake.rpc_counts()
    if died == "before-primary-commit":
        assert got == (None, None)  # rolled back, as if never written
        # not before the lock's TTL (tikv-client's 3 s) ran out
        assert time.monotonic() - started > 1.0
    else:
        assert got == (b"new", b"new")  # the committed primary decides: committed
    resolved = {m: after[m] - before[m] for m in ("KvCleanup", "KvCheckTxnStatus", "KvResolveLock")}
    # tikv-client 0.0.4 asks with KvCleanup on the primary, then KvResolveLock
    assert resolved["KvCleanup"] >= 1 and resolved["KvResolveLock"] >= 1, resolved


def test_a_long_commit_heartbeats_its_primary_but_a_secondary_reader_rolls_it_back(fake):
    """A commit still running 10 s after it began sends KvTxnHeartBeat,
    which extends the TTL of its primary lock (TiKV extends only that one).
    A reader of the primary then keeps meeting a live lock. But tikv-client
    0.0.4 judges a lock expired by the TTL in the LockInfo it met, and then
    sends KvCleanup with current_ts 0, which TiKV documents as "roll back
    regardless of the TTL": so a reader of a secondary key, whose own lock
    still says 3 s, rolls the whole transaction back. The fake does what
    TiKV does with those requests; the hazard is the client's."""
    child = _stalled_child(fake, "hb")
    try:
        deadline = time.monotonic() + 20
        while fake.rpc_counts()["KvTxnHeartBeat"] == 0:
            assert time.monotonic() < deadline, "no KvTxnHeartBeat from a commit stalled for 20 s"
            time.sleep(0.2)

        async def read(key: bytes) -> bytes | None:
            client = await real_connect(fake)()
            return await (await _snapshot(client)).get(key)

        with pytest.raises(Exception, match="(?i)lock"):
            asyncio.run(read(b"hb/a"))  # past the first TTL: alive through the heartbeat
        assert asyncio.run(read(b"hb/b")) is None  # the secondary's reader rolled it back
        assert asyncio.run(read(b"hb/a")) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
