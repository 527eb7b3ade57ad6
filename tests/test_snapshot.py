"""Backup and restore: etcdctl's and Python clients' snapshot calls against
brain (beside etcd), `brain snapshot status|restore`, and a restored store
answering as the original did at the snapshot's revision."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.snapshot.format import ALIGN, DIGEST_SIZE, SnapshotEncoder, SnapshotError, read_records, verify
from servers import brain_server, etcd_tool

pytestmark = pytest.mark.timeout(240)


def ctl(srv, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "--command-timeout=30s", *args],
                          capture_output=True, text=True, timeout=120, check=check)


def brain_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brain", *args], capture_output=True, text=True, timeout=120)


def fill(srv, n: int = 300) -> int:
    """Puts, overwrites, deletes, a lease and a compaction: history worth
    restoring. Returns the lease id."""
    with srv.channel() as ch:
        kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
        for i in range(n):
            kv.Put(rpc_pb2.PutRequest(key=b"/registry/pods/p%04d" % i, value=b"v%d" % i))
        for i in range(0, n, 3):
            kv.Put(rpc_pb2.PutRequest(key=b"/registry/pods/p%04d" % i, value=b"w%d" % i))
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/registry/pods/p0010", range_end=b"/registry/pods/p0020"))
        lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600)).ID
        kv.Put(rpc_pb2.PutRequest(key=b"/leased", value=b"x", lease=lid))
        kv.Compact(rpc_pb2.CompactionRequest(revision=n // 2, physical=True))
        kv.Put(rpc_pb2.PutRequest(key=b"/registry/pods/p0001", value=b"after-compact"))
    return lid


def state(srv, rev: int = 0) -> list[tuple]:
    """Every key with its metadata at rev (0: now)."""
    with srv.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", revision=rev))
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in r.kvs]


def revision(srv) -> int:
    with srv.channel() as ch:
        return rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)).header.revision


def test_etcdctl_snapshot_save_restore_and_carry_on(tmp_path, etcd, brain):
    lid = fill(brain)
    fill(etcd)
    # etcdctl saves both servers' snapshots alike: its own size/checksum check passes
    for srv, name in ((etcd, "etcd.db"), (brain, "brain.db")):
        out = ctl(srv, "snapshot", "save", str(tmp_path / name))
        assert f"Snapshot saved at {tmp_path / name}" in out.stdout
        assert os.path.getsize(tmp_path / name) % 512 == 32
    before, rev = state(brain), revision(brain)
    past = state(brain, rev - 5)

    st = brain_cli("snapshot", "status", str(tmp_path / "brain.db"), "-w", "json")
    assert st.returncode == 0, st.stderr
    meta = json.loads(st.stdout)
    assert (meta["revision"], meta["keys"], meta["leases"]) == (rev, len(before), 1)
    assert meta["compact_revision"] == 150

    data = tmp_path / "restored"
    r = brain_cli("snapshot", "restore", str(tmp_path / "brain.db"), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    restored = brain_server(str(tmp_path), data_dir=str(data)).start()
    try:
        assert revision(restored) == rev
        assert state(restored) == before
        assert state(restored, rev - 5) == past
        # compaction carried over: below it is compacted, as on the original
        for srv in (brain, restored):
            out = ctl(srv, "get", "/registry/pods/p0001", "--rev=10", check=False)
            assert out.returncode != 0 and "required revision has been compacted" in out.stderr
        assert ctl(restored, "lease", "list").stdout == ctl(brain, "lease", "list").stdout
        assert f"{lid:x}" in ctl(restored, "lease", "list").stdout
        # identity kept: the same cluster id in both headers
        a = json.loads(ctl(brain, "get", "x", "-w", "json").stdout)["header"]["cluster_id"]
        b = json.loads(ctl(restored, "get", "x", "-w", "json").stdout)["header"]["cluster_id"]
        assert a == b
        # and the restored store carries on from the snapshot's revision
        ctl(restored, "put", "/new", "1")
        assert revision(restored) == rev + 1
    finally:
        restored.stop()


def test_snapshot_under_load_is_one_revision(tmp_path, brain):
    fill(brain, 200)
    stop = threading.Event()

    def writer() -> None:
        with brain.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            i = 0
            while not stop.is_set():
                kv.Put(rpc_pb2.PutRequest(key=b"/load/%06d" % i, value=b"x" * 512))
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        snap = tmp_path / "s.db"
        r = brain_cli("snapshot", "save", str(snap), "--endpoints", brain.endpoint)
        assert r.returncode == 0, r.stderr
    finally:
        stop.set()
        t.join()
    meta = json.loads(brain_cli("snapshot", "status", str(snap), "-w", "json").stdout)
    expected = state(brain, meta["revision"])
    data = tmp_path / "restored"
    assert brain_cli("snapshot", "restore", str(snap), "--data-dir", str(data)).returncode == 0
    restored = brain_server(str(tmp_path), data_dir=str(data)).start()
    try:
        assert revision(restored) == meta["revision"]
        assert state(restored) == expected
    finally:
        restored.stop()


def test_python_client_snapshot(tmp_path, brain):
    pytest.importorskip("etcd3")
    fill(brain, 50)
    host, port = brain.endpoint.split(":")
    path = tmp_path / "py.db"
    code = (
        "import etcd3, sys\n"
        f"c = etcd3.client(host={host!r}, port={port})\n"
        f"f = open({str(path)!r}, 'wb'); c.snapshot(f); f.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    st = brain_cli("snapshot", "status", str(path), "-w", "json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["revision"] == revision(brain)


def test_damaged_truncated_and_existing_refused(tmp_path, brain):
    fill(brain, 50)
    good = tmp_path / "good.db"
    assert brain_cli("snapshot", "save", str(good), "--endpoints", brain.endpoint).returncode == 0
    raw = good.read_bytes()
    for name, data in (("flipped.db", raw[:200] + bytes([raw[200] ^ 1]) + raw[201:]),
                       ("truncated.db", raw[:-1000]),
                       ("digest.db", raw[:-1] + bytes([raw[-1] ^ 0xFF]))):
        (tmp_path / name).write_bytes(data)
        for args in (("status", str(tmp_path / name)),
                     ("restore", str(tmp_path / name), "--data-dir", str(tmp_path / f"{name}.dir"))):
            r = brain_cli("snapshot", *args)
            assert r.returncode != 0 and ("damaged" in r.stderr or "truncated" in r.stderr), r.stderr
        assert not (tmp_path / f"{name}.dir").exists()
    (tmp_path / "exists").mkdir()
    r = brain_cli("snapshot", "restore", str(good), "--data-dir", str(tmp_path / "exists"))
    assert r.returncode != 0 and "already exists" in r.stderr


# the format itself, without servers

def _encode(batches: list[list[tuple[bytes, bytes]]]) -> bytes:
    enc = SnapshotEncoder("test", "now")
    return enc.header() + b"".join(enc.records(b) for b in batches) + enc.finish()


def test_format_round_trip_and_alignment(tmp_path):
    batches = [[(b"k/a", b"1"), (b"mrev", (7).to_bytes(8, "big"))], [(b"x/a", b""), (b"\xff" * 300, b"\0" * 70000)]]
    data = _encode(batches)
    assert len(data) % ALIGN == DIGEST_SIZE
    path = tmp_path / "f"
    path.write_bytes(data)
    for block in (4 << 20, 100, 7):  # records inside one read, and across reads
        with open(path, "rb") as f:
            verify(f, len(data))
            items = list(read_records(f, batch=1, block=block))
        meta = items.pop()
        assert [p for b in items for p in b] == [p for b in batches for p in b]
        assert (meta.revision, meta.keys, meta.records) == (7, 1, 4)


def test_format_catches_every_single_byte_change(tmp_path):
    data = _encode([[(b"k/a", b"value"), (b"k/b", b"other")]])
    path = tmp_path / "f"
    for i in range(0, len(data), 7):
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :])
        with open(path, "rb") as f, pytest.raises(SnapshotError):
            verify(f, len(data))


def test_pages_and_batches_are_bounded_in_bytes(tmp_path, monkeypatch):
    """Large values shrink the server's scan pages and the restore's write
    batches to about a byte budget, and the file is the same."""
    import asyncio

    from brain.snapshot import stream
    from engines.base import WriteBatch
    from engines.memory import MemoryEngine

    monkeypatch.setattr(stream, "PAGE_BYTES", 1 << 20)
    limits: list[int] = []

    async def run() -> bytes:
        engine = MemoryEngine()
        wb = WriteBatch()
        for i in range(100):
            wb.put(b"k/%03d" % i, bytes([i]) * (300 << 10))
        await engine.write(wb)
        real = engine.snapshot

        class Spy:
            """The engine's snapshot, noting each scan's limit."""

            def __init__(self) -> None:
                self.snap = real()

            async def scan(self, start, end, limit=0, reverse=False, keys_only=False):
                limits.append(limit)
                return await self.snap.scan(start, end, limit, reverse, keys_only)

            def close(self) -> None:
                self.snap.close()

        def spying_snapshot():
            return Spy()

        engine.snapshot = spying_snapshot  # type: ignore[method-assign]
        out = b"".join([piece async for piece in stream.snapshot_bytes(engine, "test")])
        await engine.close()
        return out

    data = asyncio.run(run())
    assert limits[0] == stream.FIRST_PAGE and max(limits[1:]) <= 4  # 1 MiB of 300 KiB records
    path = tmp_path / "big.db"
    path.write_bytes(data)
    with open(path, "rb") as f:
        verify(f, len(data))
        batches = [b for b in read_records(f, batch_bytes=1 << 20) if isinstance(b, list)]
    assert sum(len(b) for b in batches) == 100 and max(len(b) for b in batches) <= 4
    assert batches[5][0] == (b"k/%03d" % sum(len(b) for b in batches[:5]), bytes([sum(len(b) for b in batches[:5])]) * (300 << 10))
