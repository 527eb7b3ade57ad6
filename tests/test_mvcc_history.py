"""Reads at every past revision, and events rebuilt from the engine, against a
model, over random puts and deletes grouped into batches. A live version is
stored once (its history record is the LIVE marker, records.py), so this covers
every path that turns a marker back into the version: ranges and single-key
reads at past revisions, watch replay, compaction."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from brain.apply.txn import apply_put
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc import records as K
from brain.mvcc.store import MVCCStore
from brain.watch.replay import read_events
from engines.memory import MemoryEngine

KEYS = [b"a", b"b", b"b\x00", b"c"]

op = st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(KEYS), st.binary(max_size=8))
# each inner list is written concurrently, so that it lands in one or two
# engine batches: a key can change twice in one batch
ops_strategy = st.lists(st.lists(op, min_size=1, max_size=5), min_size=1, max_size=12)


def _kv(raw: bytes) -> tuple:
    kv = kv_pb2.KeyValue.FromString(raw)
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)


@settings(max_examples=40, deadline=None)
@given(ops_strategy, st.integers(min_value=0, max_value=60))
def test_past_revisions_and_replay_match_a_model(groups, compact_at):
    async def main():
        engine = MemoryEngine()
        store = await MVCCStore.open(engine)
        states: dict[int, dict[bytes, tuple]] = {1: {}}
        events: list[tuple] = []  # (rev, key, kv or None, prev kv or None)

        async def one(kind: str, key: bytes, value: bytes) -> None:
            if kind == "put":
                resp = await store.write(lambda txn: apply_put(txn, pb.PutRequest(key=key, value=value)))
                rev = resp.header.revision
            else:
                _, rev = await store.write(lambda txn: txn.delete_range(key, None))
            done.append((rev, kind, key, value))

        for group in groups:
            done: list[tuple] = []
            await asyncio.gather(*(one(*o) for o in group))
            for rev, kind, key, value in sorted(done, key=lambda d: d[0]):
                if rev in states:  # a delete of a missing key: no revision
                    continue
                state = dict(states[max(states)])
                prev = state.get(key)
                if kind == "put":
                    kv = (key, value, prev[2] if prev else rev, rev, prev[4] + 1 if prev else 1)
                    state[key] = kv
                else:
                    state.pop(key, None)
                    kv = None
                states[rev] = state
                events.append((rev, key, kv, prev))

        last = store.rev
        assert last == max(states)
        await store.index_loaded()
        await _check_every_revision(store, states, last)
        # reopened, the key index reads its keys in the background: until
        # then ranges walk the engine; once loaded, it starts at the last
        # revision, and older reads come from the engine's history
        await store.close()
        store = await MVCCStore.open(engine)
        assert not store.index.ready
        await _check_every_revision(store, states, last)
        await store.index_loaded()
        assert store.index.ready and store.index.floor == last
        await _check_every_revision(store, states, last)

        replayed, covered = await read_events(store.view.snapshot, 2, last, 1000, True)
        assert covered == last
        assert [
            (e.rev, e.key, None if e.deleted else _kv(e.kv), None if e.prev is None else _kv(e.prev)) for e in replayed
        ] == events

        # the layout: each live version stored once, every other version in full
        for key in KEYS:
            records = await engine.scan(K.history_prefix(key), K.history_prefix(key) + b"\xff" * 9)
            live = states[last].get(key)
            for hk, value in records:
                if live is not None and K.unpack_rev(hk[-8:])[0] == live[3]:
                    assert value == K.LIVE
                else:
                    assert value != K.LIVE

        # the key set: a record for each live key, none for the others
        keyset = await engine.scan(K.KEYSET, K.KEYSET_END)
        assert [k[1:] for k, _ in keyset] == sorted(states[last])

        # compaction keeps what reads at and after its revision need
        target = 1 + compact_at % last
        await store.compact(target, physical=True)
        for rev in range(target, last + 1):
            want = states[rev]
            got = await store.view.range(b"", b"", rev=rev)
            assert [_kv(r) for r in got.kvs] == [want[k] for k in sorted(want)]
        for key, live in states[last].items():
            assert await engine.get(K.history_key(key, live[3])) == K.LIVE
        await store.close()

    asyncio.run(main())


async def _check_every_revision(store: MVCCStore, states: dict, last: int) -> None:
    for rev in range(1, last + 1):
        want = states[rev]
        got = await store.view.range(b"", b"", rev=rev)
        assert [_kv(r) for r in got.kvs] == [want[k] for k in sorted(want)]
        assert got.count == len(want)
        for key in KEYS:
            one_key = await store.view.range(key, None, rev=rev)
            assert [_kv(r) for r in one_key.kvs] == ([want[key]] if key in want else [])
        for start, end in ((b"", b""), (b"b", b"c"), (b"b\x00", b"")):
            inside = [want[k] for k in sorted(want) if k >= start and (not end or k < end)]
            for limit in (1, 2):
                limited = await store.view.range(start, end, rev=rev, limit=limit)
                assert [_kv(r) for r in limited.kvs] == inside[:limit]
                assert limited.count == len(inside)
            counted = await store.view.range(start, end, rev=rev, count_only=True)
            assert counted.count == len(inside) and not counted.kvs
