"""The key index (brain/mvcc/key_index.py) against a model: the set of live
keys at every revision, through creates, updates, deletes, compaction and a
bounded log. Counts and pages at every revision the index still reaches must
be the model's; older ones must be refused (None), never answered wrong."""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings, strategies as st

from brain.mvcc.key_index import KeyIndex

KEYS = [b"a", b"a\x00", b"ab", b"b", b"ba", b"c", b"d\xff", b"e"]


@dataclass
class C:
    rev: int
    key: bytes
    deleted: bool
    prev: bytes | None


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=4)),
        st.tuples(st.just("compact"), st.integers(0, 40)),
        st.tuples(st.just("query"), st.integers(0, 40)),
        # a reader's slice of gathering the corrections of the revision
        # that many back
        st.tuples(st.just("advance"), st.integers(1, 6), st.integers(1, 3)),
    ),
    max_size=40,
)
ranges = [(b"", b""), (b"a", b"b"), (b"a\x00", b"c"), (b"b", b""), (b"c", b"e"), (b"zz", b""), (b"ab", b"ab\x00")]


def _expect(live: set[bytes], start: bytes, end: bytes, limit: int) -> tuple[list[bytes], int]:
    inside = sorted(k for k in live if k >= start and (end == b"" or k < end))
    return (inside[:limit] if limit > 0 else inside), len(inside)


@settings(max_examples=300, deadline=None)
@given(ops=ops, initial=st.sets(st.sampled_from(KEYS)), max_log=st.sampled_from([3, 10, 1000]),
       loaded_after=st.one_of(st.none(), st.integers(0, 40)))
def test_index_matches_a_model(ops, initial, max_log, loaded_after):
    """loaded_after: the index starts without its keys (as at an open, while
    they are read) and gets them after that many ops."""
    from sortedcontainers import SortedList

    rev = 5
    late = loaded_after is not None
    index = KeyIndex(rev, None if late else sorted(initial), max_log=max_log)
    live = set(initial)
    history = {rev: frozenset(live)}  # the live set at each revision
    compact = 0
    for n, op in enumerate(ops + [("query", 40)]):
        if late and n == loaded_after:
            index.loaded(SortedList(initial), sum(map(len, initial)))
            late = False
        if late:
            assert index.count(rev, b"", b"") is None and index.page(rev, b"", b"", 0) is None
        if op[0] == "write":
            rev += 1
            changes = []
            for key, delete in op[1]:
                if delete:
                    if key in live:
                        live.discard(key)
                        changes.append(C(rev, key, True, b"v"))
                else:
                    changes.append(C(rev, key, False, b"v" if key in live else None))
                    live.add(key)
            if not changes:
                rev -= 1
                continue
            index.apply(changes, rev)
            history[rev] = frozenset(live)
        elif op[0] == "advance":
            index.advance(max(0, rev - op[1]), op[2])
        elif op[0] == "compact":
            c = min(op[1], rev)
            if c > compact:
                compact = c
                index.forget_below(c)
        elif not late:
            _check(index, history, rev, compact, op[1])
    if late:
        index.loaded(SortedList(initial), sum(map(len, initial)))
    for r in range(1, rev + 2):
        _check(index, history, rev, compact, r)
    assert len(index) == len(live)
    assert list(index.keys) == sorted(live)
    assert index.key_bytes == sum(map(len, live))


def _check(index: KeyIndex, history: dict, rev: int, compact: int, r: int) -> None:
    r = min(r, rev)
    known = [x for x in history if x <= r]
    for start, end in ranges:
        got_count = index.count(r, start, end)
        if r < index.floor or not known:
            assert got_count is None or r == index.rev
            continue
        assert r >= compact
        live = history[max(known)]
        for limit in (0, 1, 2, 5):
            page = index.page(r, start, end, limit)
            assert page is not None
            keys, count = _expect(live, start, end, limit)
            assert (page.keys, page.count) == (keys, count), (r, start, end, limit)
            # a key that changed after r is flagged, so its value is read from history
            assert all(k in page.changed for k in keys if k not in history[rev] or _changed_after(history, k, r))
        assert got_count == _expect(live, start, end, 0)[1]


def test_an_old_revision_is_gathered_in_bounded_slices():
    """A reader far behind brings the corrections forward a slice per call,
    and each call works through at most its budget of the log."""
    index = KeyIndex(1, [b"k%05d" % i for i in range(0, 3000, 2)])
    rev = 1
    for i in range(3000):
        rev += 1
        key = b"k%05d" % i
        index.apply([C(rev, key, i % 2 == 0, b"v" if i % 2 == 0 else None)], rev)
    calls = 0
    while not index.advance(1, 100):
        calls += 1
        past = index._past[1]
        assert len(past.live_then) <= 100 * calls
        # writes go on between slices
        rev += 1
        index.apply([C(rev, b"z%05d" % calls, False, None)], rev)
    # 3,000 changes gathered and 3,000 keys settled, 100 at a time, plus
    # the writes made meanwhile
    assert 55 <= calls <= 70
    page = index.page(1, b"", b"", 0)
    assert page is not None
    assert page.keys == [b"k%05d" % i for i in range(0, 3000, 2)] and page.count == 1500
    assert index.count(1, b"k", b"l") == 1500
    assert index.count(rev, b"k", b"l") == 1500 and index.count(rev, b"z", b"") == calls


def _changed_after(history: dict, key: bytes, r: int) -> bool:
    then = max(x for x in history if x <= r)
    states = [key in history[x] for x in sorted(history) if x >= then]
    return len(set(states)) > 1


def test_floor_is_the_revision_it_was_built_at():
    index = KeyIndex(10, [b"a", b"b"])
    assert index.count(10, b"", b"") == 2
    assert index.page(9, b"", b"", 0) is None
    index.apply([C(11, b"c", False, None)], 11)
    assert index.count(10, b"", b"") == 2 and index.count(11, b"", b"") == 3
    index.forget_below(11)
    assert index.count(10, b"", b"") is None


def test_an_older_store_gets_its_key_set_at_open():
    """A store written before the key set and leased-key records existed
    (here: with them removed) gets them from its index at the next open."""
    import asyncio

    from brain.apply.txn import apply_put
    from brain.etcdpb import rpc_pb2 as pb
    from brain.mvcc import records as K
    from brain.mvcc.store import MVCCStore
    from engines.base import WriteBatch
    from engines.memory import MemoryEngine

    async def main() -> None:
        engine = MemoryEngine()
        store = await MVCCStore.open(engine)
        store.lease_exists = lambda _id: True
        for i in range(30):
            r = pb.PutRequest(key=b"k%02d" % i, value=b"v", lease=(7 if i % 3 == 0 else 0))
            await store.write(lambda txn, r=r: apply_put(txn, r))
        await store.write(lambda txn: txn.delete_range(b"k00", None))
        want_keys = [b"k%02d" % i for i in range(1, 30)]
        want_leased = [(7, b"k%02d" % i) for i in range(3, 30, 3)]
        assert [k[1:] for k, _ in await engine.scan(K.KEYSET, K.KEYSET_END)] == want_keys
        assert [K.decode_leased(k) for k, _ in await engine.scan(K.LEASED, K.LEASED_END)] == want_leased
        await store.close()
        wb = WriteBatch()
        for k, _ in await engine.scan(K.KEYSET, K.LEASED_END):
            wb.delete(k)
        wb.delete(K.META_KEYSET)
        await engine.write(wb)
        store = await MVCCStore.open(engine)
        await store.index_loaded()
        assert list(store.index.keys) == want_keys
        assert [K.decode_leased(k) for k, _ in await engine.scan(K.LEASED, K.LEASED_END)] == want_leased
        assert await engine.get(K.META_KEYSET) is not None
        await store.close()

    asyncio.run(main())


def test_a_large_range_at_a_pinned_revision_is_read_in_slices():
    """More keys than one slice (view.DROP_SLICE) at an older revision: read
    a slice per turn of the loop, the whole answer still the one at that
    revision."""
    import asyncio

    from brain.mvcc import view as V
    from brain.mvcc.store import MVCCStore
    from engines.memory import MemoryEngine

    n = V.DROP_SLICE + 300

    async def main() -> None:
        store = await MVCCStore.open(MemoryEngine())
        await store.index_loaded()

        async def put_many(txn, lo, hi):
            for i in range(lo, hi):
                await txn.put(b"k%06d" % i, b"v%d" % i, 0)
        for lo in range(0, n, 2000):
            await store.write(lambda txn, lo=lo: put_many(txn, lo, min(n, lo + 2000)))
        pinned = store.rev
        await store.write(lambda txn: txn.delete_range(b"k000005", None))
        await store.write(lambda txn: put_many(txn, n, n + 10))
        for limit in (0, n - 1, n + 50):
            got = await store.view.range(b"k", b"l", rev=pinned, limit=limit)
            assert got.count == n
            want = [b"v%d" % i for i in range(n)][: limit or n]
            assert [kv[-len(w):] for kv, w in zip(got.kvs, want)] == want and len(got.kvs) == len(want)
        await store.close()

    asyncio.run(main())
