"""A full disk under brain: a small tmpfs made for the test holds brain's
data directory and a filler file. brain takes writes until the disk is
full; then every write fails with a clear error, the server keeps serving,
no acknowledged write is lost (across a kill -9 as well), and once the
filler is removed writes succeed again.

etcd is not compared: it stops when its disk fills."""
from __future__ import annotations

import os
import subprocess
import tempfile

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import brain_server

FS_BYTES = 32 << 20
FILLER_BYTES = 24 << 20  # freed later; leaves brain a few MiB
DISK_FULL = ("RESOURCE_EXHAUSTED", "etcdserver: no space left on device")
MAX_PUTS = 5000
FAILURES_TO_STOP = 20


@pytest.fixture
def small_fs():
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tempfile.mkdtemp(prefix="brain-full-disk-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        os.rmdir(mnt)


def put(kv, key: bytes, value: bytes) -> tuple[str, str]:
    try:
        kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=30)
    except grpc.RpcError as e:
        return e.code().name, e.details()
    return "OK", ""


def call(fn, req) -> tuple[str, str]:
    try:
        fn(req, timeout=30)
    except grpc.RpcError as e:
        return e.code().name, e.details()
    return "OK", ""


def check_all(kv, acked: dict[bytes, bytes]) -> None:
    r = kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"), timeout=30)
    got = {x.key: x.value for x in r.kvs}
    missing = [k for k in acked if k not in got]
    assert not missing, f"{len(missing)} acknowledged keys lost, e.g. {missing[:3]}"
    wrong = [k for k, v in acked.items() if got[k] != v]
    assert not wrong, f"{len(wrong)} acknowledged keys have other values, e.g. {wrong[:3]}"


def test_full_disk_refuses_writes_clearly_and_recovers(small_fs, tmp_path):
    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * FILLER_BYTES)
    data = os.path.join(small_fs, "data")
    # no quota: the disk, not the quota, is what fills
    brain = brain_server(str(tmp_path), "--quota-backend-bytes", "-1", data_dir=data).start()
    try:
        acked: dict[bytes, bytes] = {}
        failures: set[tuple[str, str]] = set()
        failed = 0
        with brain.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(MAX_PUTS):
                # sizes that vary, so that both brain's log and LevelDB's
                # files are the ones to meet the end of the disk
                key, value = b"k%05d" % i, os.urandom(100 + (i * 7919) % 30_000)
                outcome = put(kv, key, value)
                if outcome == ("OK", ""):
                    acked[key] = value
                    continue
                failures.add(outcome)
                failed += 1
                if failed >= FAILURES_TO_STOP:
                    break
            assert failed, "the disk never filled"
            assert failures == {DISK_FULL}
            assert brain.proc.poll() is None, "brain stopped on a full disk"
            check_all(kv, acked)
            # writes of every kind still refused while the disk is full
            assert put(kv, b"k-full", os.urandom(1 << 20)) == DISK_FULL
            assert call(rpc_pb2_grpc.LeaseStub(ch).LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=60)) == DISK_FULL
            rev = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=30).header.revision
            assert call(kv.Compact, rpc_pb2.CompactionRequest(revision=rev)) == DISK_FULL

            os.remove(filler)
            assert put(kv, b"k-after", b"space again") == ("OK", "")
            assert call(kv.Compact, rpc_pb2.CompactionRequest(revision=rev)) == ("OK", "")
            acked[b"k-after"] = b"space again"
            check_all(kv, acked)
        # nothing acknowledged is lost, even without a clean stop
        brain.kill()
        brain.start()
        with brain.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            check_all(kv, acked)
            assert put(kv, b"k-restarted", b"y") == ("OK", "")
    finally:
        brain.stop()


def test_leveldb_engine_without_reserve_loses_no_acknowledged_write(small_fs):
    """With no reserve, the disk fills under LevelDB's own log or brain's:
    the failed write is refused as a full disk, a failure inside LevelDB's
    log stops the engine's writes (what follows a torn record there would
    not survive a recovery), and a reopen once space is freed has every
    acknowledged write."""
    import asyncio

    from engines.base import EngineFullError, WriteBatch
    from engines.leveldb import LevelDBEngine

    filler = os.path.join(small_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * FILLER_BYTES)
    data = os.path.join(small_fs, "engine")

    async def fill() -> tuple[dict[bytes, bytes], list[str]]:
        engine = LevelDBEngine(data, disk_reserve_bytes=-1)
        acked: dict[bytes, bytes] = {}
        refusals: list[str] = []
        try:
            for i in range(MAX_PUTS):
                key, value = b"k%05d" % i, os.urandom(100 + (i * 7919) % 30_000)
                wb = WriteBatch()
                wb.put(key, value)
                try:
                    await engine.write(wb)
                except EngineFullError as e:
                    refusals.append(str(e))
                    if len(refusals) >= FAILURES_TO_STOP:
                        break
                else:
                    acked[key] = value
            os.remove(filler)
            wb = WriteBatch()
            wb.put(b"k-after", b"space again")
            try:
                await engine.write(wb)
            except EngineFullError as e:
                assert "restart brain once space is freed" in str(e), e
            else:
                acked[b"k-after"] = b"space again"
        finally:
            await engine.close()
        return acked, refusals

    async def reopen(acked: dict[bytes, bytes]) -> None:
        engine = LevelDBEngine(data, disk_reserve_bytes=-1)
        try:
            stored = await engine.batch_get(list(acked))
            lost = [k for k, v in zip(acked, stored) if v != acked[k]]
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
            wb = WriteBatch()
            wb.put(b"k-reopened", b"y")
            await engine.write(wb)
        finally:
            await engine.close()

    acked, refusals = asyncio.run(fill())
    assert refusals, "the disk never filled"
    assert all("No space left on device" in r or "restart brain" in r for r in refusals), refusals[:3]
    asyncio.run(reopen(acked))
