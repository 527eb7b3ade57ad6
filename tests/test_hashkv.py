"""Maintenance.HashKV and Maintenance.Hash.

In process: the store's HashKV against the definition in brain/mvcc/hash.py
computed here from a model of the history, before and after physical
compaction and after a reopen. As processes: two brains fed the same
operations agree at every revision, across a restart and a repeated
compaction, and disagree once a value or a lease differs; etcdctl's
`endpoint hashkv` and the revision errors as etcd 3.5 gives them."""
from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brain.apply.txn import apply_put
from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc
from brain.mvcc.hash import hash_all, hash_kv
from brain.mvcc.store import MVCCStore
from brain.mvcc.view import ReadView
from engines.base import Engine
from engines.leveldb import LevelDBEngine
from engines.memory import MemoryEngine
from engines.tikv import TikvEngine
from servers import brain_server, etcd_tool

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "engines"))
from tikv_double import FakeTikv  # noqa: E402  (the tikv-client test double, beside the engine tests)

KEYS = [b"a", b"b", b"b\x00", b"c"]
LEASES = [0, 0, 7, 9]

# -- the definition, restated from the module docstring ----------------------

Version = tuple[bytes, bytes, int, int, int, int]  # key, value, create, mod, version, lease


def model_hash(history: list[tuple[int, bytes, Version | None]], compact: int, rev: int) -> int:
    """HashKV from a list of (revision, key, version or None for a delete)."""
    def record(key: bytes, v: Version | None, mod: int) -> bytes:
        value, create, version, lease = (v[1], v[2], v[4], v[5]) if v else (b"", 0, 0, 0)
        return struct.pack(">I", len(key)) + key + struct.pack(">qqqq", mod, create, version, lease) \
            + struct.pack(">I", len(value)) + value

    crc = zlib.crc32(b"brain-hashkv-v1")
    for key in sorted({k for _, k, _ in history}):
        mine = sorted((r, v) for r, k, v in history if k == key and r <= rev)
        at_compact = [(r, v) for r, v in mine if r <= compact]
        if at_compact and at_compact[-1][1] is not None:
            crc = zlib.crc32(record(key, at_compact[-1][1], at_compact[-1][0]), crc)
        for r, v in mine:
            if r > compact:
                crc = zlib.crc32(record(key, v, r), crc)
    return crc


class Place:
    """Where a store's engine lives, so that it can be reopened there: the
    in-memory engine (reopened as is), LevelDB in a directory, or the TiKV
    engine over the tikv-client test double."""

    def __init__(self, kind: str, tmp: str) -> None:
        self.kind = kind
        self.tmp = tmp
        self.cluster = FakeTikv() if kind == "tikv" else None
        self.memory = MemoryEngine() if kind == "memory" else None

    async def open(self) -> Engine:
        if self.memory is not None:
            return self.memory
        if self.cluster is not None:
            return await TikvEngine.open(self.cluster.client(), key_prefix=b"brain/hash/")
        return LevelDBEngine(self.tmp)

    async def reopen(self, engine: Engine) -> Engine:
        if engine is not self.memory:
            await engine.close()
        return await self.open()


op = st.tuples(st.sampled_from(["put", "put", "delete"]), st.sampled_from(KEYS), st.binary(max_size=6),
               st.sampled_from(LEASES))


@pytest.mark.parametrize("kind", ["memory", "leveldb", "tikv"])
@settings(max_examples=30, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=30), compact_at=st.integers(min_value=0, max_value=40))
def test_hashkv_matches_its_definition(kind, ops, compact_at):
    async def main(place: Place):
        engine = await place.open()
        store = await MVCCStore.open(engine)
        store.lease_exists = lambda _id: True
        history: list[tuple[int, bytes, Version | None]] = []
        live: dict[bytes, Version] = {}
        for what, key, value, lease in ops:
            if what == "put":
                resp = await store.write(lambda t: apply_put(t, pb.PutRequest(key=key, value=value, lease=lease)))
                rev = resp.header.revision
                prev = live.get(key)
                live[key] = (key, value, prev[2] if prev else rev, rev, prev[4] + 1 if prev else 1, lease)
                history.append((rev, key, live[key]))
            elif key in live:
                _, rev = await store.write(lambda t: t.delete_range(key, None))
                del live[key]
                history.append((rev, key, None))
        current = store.rev
        for r in range(1, current + 1):
            assert (await hash_kv(store.view, r)).hash == model_hash(history, 0, r)
        compact = min(compact_at, current)
        if compact >= 1:
            # the engine as it was before compaction: a server whose compaction
            # is scheduled but not yet done serves HashKV from such a snapshot
            before = engine.snapshot()
            await store.compact(compact, physical=True)
            unfinished = ReadView(before, current, compact, store.index)
            for r in range(compact + 1, current + 1):
                want = model_hash(history, compact, r)
                assert (await hash_kv(store.view, r)).hash == want, f"at {r}, compacted at {compact}"
                assert (await hash_kv(unfinished, r)).hash == want, f"at {r}, compaction at {compact} unfinished"
            before.close()
        whole = await hash_all(engine)
        await store.close()
        engine = await place.reopen(engine)
        reopened = await MVCCStore.open(engine)
        for r in range(compact + 1, current + 1):
            assert (await hash_kv(reopened.view, r)).hash == model_hash(history, compact, r)
        assert await hash_all(engine) == whole
        await reopened.close()
        if engine is not place.memory:
            await engine.close()

    with tempfile.TemporaryDirectory(prefix="hashkv-") as tmp:
        asyncio.run(main(Place(kind, tmp)))


# -- as processes ---------------------------------------------------------------


def feed(srv, lease_id: int = 0x1234) -> list[int]:
    """The same operations on any server: puts, a lease and keys on it, a
    txn, deletes, a compaction. The revision after each step."""
    revs = []
    with srv.channel() as ch:
        kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
        for i in range(6):
            revs.append(kv.Put(pb.PutRequest(key=b"k/%d" % (i % 4), value=b"v%d" % i)).header.revision)
        lease.LeaseGrant(pb.LeaseGrantRequest(ID=lease_id, TTL=600))
        revs.append(kv.Put(pb.PutRequest(key=b"k/leased", value=b"x", lease=lease_id)).header.revision)
        revs.append(kv.Txn(pb.TxnRequest(
            compare=[pb.Compare(key=b"k/0", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=2)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k/9", value=b"t")),
                     pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"k/1"))],
        )).header.revision)
        revs.append(kv.DeleteRange(pb.DeleteRangeRequest(key=b"k/2")).header.revision)
        kv.Compact(pb.CompactionRequest(revision=revs[3], physical=True))
        for i in range(3):
            revs.append(kv.Put(pb.PutRequest(key=b"k/\x00%d" % i, value=b"\xff" * i)).header.revision)
    return revs


def hashkv(srv, rev: int = 0) -> pb.HashKVResponse:
    with srv.channel() as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=rev), timeout=30)


def hashes(srv, revs: list[int]) -> dict[int, tuple[int, int]]:
    return {r: (got.hash, got.compact_revision) for r in revs for got in [hashkv(srv, r)]}


@pytest.fixture
def two_brains(tmp_path):
    a = brain_server(str(tmp_path)).start()
    b = brain_server(str(tmp_path)).start()
    yield a, b
    a.stop()
    b.stop()


def test_same_history_same_hashkv(two_brains):
    a, b = two_brains
    revs = feed(a)
    assert feed(b) == revs
    compacted = revs[3]
    later = [r for r in revs if r > compacted] + [0]
    ha = hashes(a, later)
    assert ha == hashes(b, later)
    assert len({h for h, _ in ha.values()}) == len(set(revs) & set(later)), "every revision hashes differently"
    assert all(c == compacted for _, c in ha.values())

    a.restart()
    assert hashes(a, later) == ha
    with a.channel() as ch:
        with pytest.raises(grpc.RpcError) as e:
            rpc_pb2_grpc.KVStub(ch).Compact(pb.CompactionRequest(revision=compacted, physical=True))
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert hashes(a, later) == ha

    with a.channel() as ch:  # the store-wide Hash agrees once both compacted as far
        ha_all = rpc_pb2_grpc.MaintenanceStub(ch).Hash(pb.HashRequest())
    with b.channel() as ch:
        hb_all = rpc_pb2_grpc.MaintenanceStub(ch).Hash(pb.HashRequest())
    assert ha_all.hash == hb_all.hash and ha_all.header.revision == hb_all.header.revision


@pytest.mark.parametrize("differing", ["value", "lease"])
def test_a_differing_value_or_lease_changes_hashkv(two_brains, differing):
    a, b = two_brains
    assert feed(a) == feed(b)
    same = pb.PutRequest(key=b"k/3", value=b"v")
    other = pb.PutRequest(key=b"k/3", value=b"w") if differing == "value" else \
        pb.PutRequest(key=b"k/3", value=b"v", lease=0x1234)
    with a.channel() as ca, b.channel() as cb:
        before = rpc_pb2_grpc.KVStub(ca).Put(same).header.revision
        assert rpc_pb2_grpc.KVStub(cb).Put(same).header.revision == before
        assert hashkv(a).hash == hashkv(b).hash
        rev = rpc_pb2_grpc.KVStub(ca).Put(same).header.revision
        assert rpc_pb2_grpc.KVStub(cb).Put(other).header.revision == rev
    assert hashkv(a, rev).hash != hashkv(b, rev).hash
    assert hashkv(a, before).hash == hashkv(b, before).hash  # the history before the difference agrees


def ctl(srv, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run([etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "--command-timeout=20s", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_etcdctl_endpoint_hashkv_like_etcd(etcd, brain):
    def shape(srv, *args: str) -> dict:
        out = ctl(srv, "-w", "json", "endpoint", "hashkv", *args)
        assert out.returncode == 0, out.stderr
        [entry] = json.loads(out.stdout)
        assert entry["Endpoint"] == srv.endpoint
        got = entry["HashKV"]
        assert set(got) == {"header", "hash", "compact_revision"}
        assert isinstance(got["hash"], int) and got["hash"] > 0
        return {"revision": got["header"]["revision"], "compact_revision": got["compact_revision"]}

    assert shape(etcd) == shape(brain) == {"revision": 1, "compact_revision": -1}
    assert feed(etcd) == feed(brain)
    assert shape(etcd) == shape(brain)
    assert shape(etcd, "--rev", "8") == shape(brain, "--rev", "8")
    simple = ctl(brain, "endpoint", "hashkv")
    assert simple.returncode == 0
    assert simple.stdout.strip() == f"{brain.endpoint}, {hashkv(brain).hash}"


def test_revision_errors_like_etcd(etcd, brain):
    revs = feed(etcd)
    assert feed(brain) == revs
    compacted = revs[3]
    for rev in (1, compacted - 1, compacted, revs[-1] + 1, revs[-1] + 100):
        answers = []
        for srv in (etcd, brain):
            try:
                hashkv(srv, rev)
                answers.append(None)
            except grpc.RpcError as e:
                answers.append((e.code(), e.details()))
        assert answers[0] is not None, f"etcd answered HashKV at {rev}"
        assert answers[0] == answers[1], f"HashKV at {rev}: etcd {answers[0]}, brain {answers[1]}"
    for rev in (compacted + 1, revs[-1]):
        hashkv(brain, rev)
        hashkv(etcd, rev)
