"""A big DeleteRange writes the copies of the versions it deletes ahead of
its own batch (brain/mvcc/copy_ahead.py): the answers are those of a delete
that wrote everything in one batch, and copies that landed without their
batch change nothing anyone can read."""
from __future__ import annotations

import asyncio

import pytest

from brain.apply.txn import apply_txn
from brain.errors import DiskFullError
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc import records as K
from brain.mvcc.copy_ahead import MIN_KEYS
from brain.mvcc.hash import hash_kv
from brain.mvcc.store import MVCCStore
from engines import open_engine
from engines.base import EngineFullError, WriteBatch

KEYS = MIN_KEYS + 500


async def _load(store: MVCCStore) -> dict[bytes, bytes]:
    """KEYS keys in Txns of 100 puts, then a tenth of them updated."""
    values = {b"/pods/%06d" % i: b"v%d-" % i + b"x" * 200 for i in range(KEYS)}
    keys = sorted(values)
    for i in range(0, KEYS, 100):
        t = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=values[k])) for k in keys[i : i + 100]])
        await store.write(lambda txn, t=t: apply_txn(txn, t))
    for k in keys[::10]:
        values[k] += b"-2"
        t = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=values[k]))])
        await store.write(lambda txn, t=t: apply_txn(txn, t))
    return values


async def _values_at(store: MVCCStore, rev: int) -> dict[bytes, bytes]:
    rr = await store.view.range(b"/pods/", b"/pods0", rev=rev)
    return {kv.key: kv.value for kv in map(kv_pb2.KeyValue.FromString, rr.kvs)}


def _record_writes(engine) -> list[WriteBatch]:
    """Every plain engine write from now on (the copies ahead go through
    write; a batch's own commit may use commit_if or commit_snapshot)."""
    writes: list[WriteBatch] = []
    write = engine.write

    async def recording(batch: WriteBatch, sync: bool = True) -> None:
        writes.append(batch)
        await write(batch, sync=sync)

    engine.write = recording
    return writes


async def _delete_all(store: MVCCStore) -> int:
    deleted, _ = await store.write(lambda txn: txn.delete_range(b"/pods/", b"/pods0"))
    return deleted


@pytest.mark.parametrize("engine_name", ["leveldb", "memory"])
def test_a_big_delete_range_writes_its_copies_first_and_reads_as_before(engine_name, tmp_path):
    async def main():
        engine = open_engine(engine_name, data_dir=str(tmp_path / "d"))
        store = await MVCCStore.open(engine)
        values = await _load(store)
        before = store.view.rev
        hashed = await hash_kv(store.view, before)
        writes = _record_writes(engine)
        assert await _delete_all(store) == KEYS
        assert store.view.rev == before + 1
        # copies went ahead, in writes of history records only, and every
        # deleted version's history record now holds it in full
        ahead = [w for w in writes if w.ops and all(k.startswith(K.HISTORY) for k, _ in w.ops)]
        assert sum(len(w) for w in ahead) == KEYS
        assert all(v is not None and not K.is_live_marker(v) for w in ahead for _, v in w.ops)
        assert await _values_at(store, before) == values
        assert await _values_at(store, before + 1) == {}
        assert await hash_kv(store.view, before) == hashed
        await store.close()
        await engine.close()

    asyncio.run(main())


def test_copies_whose_batch_never_lands_change_nothing_readable(tmp_path):
    """The disk fills up when the delete's own batch is written, after its
    copies landed: the delete fails, the store reads exactly as before (its
    hash included), also after a restart, and the delete succeeds later."""
    path = str(tmp_path / "d")

    async def main():
        engine = open_engine("leveldb", data_dir=path)
        store = await MVCCStore.open(engine)
        values = await _load(store)
        before = store.view.rev
        hashed = await hash_kv(store.view, before)
        writes = _record_writes(engine)
        commit_snapshot = engine.commit_snapshot

        async def full_disk(expect, batch, sync=True):
            if any(k == K.META_REVISION for k, _ in batch.ops[-3:]) and len(batch) > KEYS:
                raise EngineFullError("no space left on device (injected)")
            return await commit_snapshot(expect, batch, sync=sync)

        engine.commit_snapshot = full_disk
        with pytest.raises(DiskFullError):
            await _delete_all(store)
        engine.commit_snapshot = commit_snapshot
        assert sum(len(w) for w in writes) == KEYS  # the copies landed
        stored = await engine.batch_get([k for w in writes for k, _ in w.ops])
        assert all(v is not None and not K.is_live_marker(v) for v in stored)
        assert store.view.rev == before
        assert await _values_at(store, before) == values
        assert await hash_kv(store.view, before) == hashed
        await store.close()
        await engine.close()

        engine = open_engine("leveldb", data_dir=path)
        store = await MVCCStore.open(engine)
        assert store.view.rev == before
        assert await _values_at(store, before) == values
        assert await hash_kv(store.view, before) == hashed
        assert await _delete_all(store) == KEYS
        assert await _values_at(store, before) == values
        assert await _values_at(store, before + 1) == {}
        await store.close()
        await engine.close()

    asyncio.run(main())
