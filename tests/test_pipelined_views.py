"""With two commits in flight (an engine declaring ordered_writes), every
view the writer publishes holds its own batch and nothing after it: a read
at a view never returns a key whose mod_revision passes the view's
revision, though the engine already holds the next batch when the writer
hears that the last one landed."""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

import pytest

from brain.apply.txn import apply_put
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from brain.mvcc.view import ReadView
from engines import open_engine
from engines.base import WriteBatch
from engines.features import EngineFeatures
from engines.memory import MemoryEngine

KEYS = [b"k/%d" % i for i in range(4)]


class LateReportingEngineDouble:
    """A test double around a real engine whose writes return to their
    caller late, as when the event loop is busy as the engine's thread
    finishes a write: by then the engine has applied the batch queued
    behind it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        await self._inner.write(batch, sync)
        await asyncio.sleep(0.004)

    async def commit_if(self, expect: Sequence[tuple[bytes, bytes | None]], batch: WriteBatch, sync: bool = True) -> None:
        await self._inner.commit_if(expect, batch, sync)
        await asyncio.sleep(0.004)

    async def commit_snapshot(self, expect: Sequence[tuple[bytes, bytes | None]], batch: WriteBatch, sync: bool = True) -> Any:
        snap = await self._inner.commit_snapshot(expect, batch, sync)
        await asyncio.sleep(0.004)
        return snap


class UnorderedEngineDouble:
    """A test double: the memory engine, declaring no features."""

    name = "unordered"
    durable = False
    features = EngineFeatures()

    def __init__(self) -> None:
        self._inner = MemoryEngine()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("engine_name", ["leveldb", "memory"])
def test_each_published_view_holds_its_batch_and_no_later_one(engine_name, tmp_path):
    async def main() -> None:
        # LevelDB: every synced write on its write thread (the slow-disk path),
        # the next one queued behind it
        opts = {"inline_sync_max": 0.0} if engine_name == "leveldb" else {}
        inner = open_engine(engine_name, data_dir=str(tmp_path / "data"), **opts)
        assert inner.features.ordered_writes
        store = await MVCCStore.open(LateReportingEngineDouble(inner))  # type: ignore[arg-type]
        views: list[ReadView] = []
        store.add_listener(lambda changes, rev: views.append(store.view))

        async def writer(w: int) -> None:
            for i in range(12):
                req = pb.PutRequest(key=KEYS[(w + i) % len(KEYS)], value=b"%d/%d" % (w, i))
                await store.write(lambda txn: apply_put(txn, req))
                await asyncio.sleep(0.001 * (w % 3))

        await asyncio.gather(*(writer(w) for w in range(24)))
        assert store.batches >= 10 and len(views) == store.batches
        past = []
        for view in views:
            got = await view.range(b"k/", b"k0")
            for raw in got.kvs:
                kv = kv_pb2.KeyValue.FromString(raw)
                if kv.mod_revision > view.rev:
                    past.append((view.rev, kv.key, kv.mod_revision))
            for key in KEYS:
                raw = await view.get_latest(key)
                if raw is not None and kv_pb2.KeyValue.FromString(raw).mod_revision > view.rev:
                    past.append((view.rev, key, kv_pb2.KeyValue.FromString(raw).mod_revision))
        assert not past, f"{len(past)} reads at a view returned a later revision's key, first (view, key, mod_revision): {past[0]}"
        # and the views follow one another: each at its batch's revision
        assert [v.rev for v in views] == sorted({v.rev for v in views})
        views.clear()
        await store.close()
        await inner.close()

    asyncio.run(main())


def test_an_engine_without_ordered_writes_commits_one_batch_at_a_time(tmp_path):
    """The writer's other way: a plain write, then the engine's snapshot,
    one commit in flight (an engine that declares nothing)."""
    async def main() -> None:
        engine = UnorderedEngineDouble()
        store = await MVCCStore.open(engine)  # type: ignore[arg-type]
        views: list[ReadView] = []
        store.add_listener(lambda changes, rev: views.append(store.view))
        resps = await asyncio.gather(*(store.write(lambda txn, i=i: apply_put(txn, pb.PutRequest(key=KEYS[i % 4], value=b"%d" % i))) for i in range(40)))
        assert sorted(r.header.revision for r in resps) == list(range(2, 42))
        for view in views:
            got = await view.range(b"k/", b"k0")
            assert all(kv_pb2.KeyValue.FromString(raw).mod_revision <= view.rev for raw in got.kvs)
        assert [v.rev for v in views] == sorted({v.rev for v in views}) and views[-1].rev == 41
        views.clear()
        await store.close()
        await engine.close()

    asyncio.run(main())
