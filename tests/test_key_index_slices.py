"""A commit of very many keys applied to the key index a slice per turn of
the event loop (KeyIndex.apply_in_slices): readers never see a half-applied
key set, commits made meanwhile land after it in order, and the loop turns
between slices."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given, settings, strategies as st

from brain.mvcc.key_index import KeyIndex


@dataclass
class C:
    rev: int
    key: bytes
    deleted: bool
    prev: bytes | None


def key(i: int) -> bytes:
    return b"k%06d" % i


def _expect(live: set[bytes], start: bytes, end: bytes, limit: int) -> tuple[list[bytes], int]:
    inside = sorted(k for k in live if k >= start and (end == b"" or k < end))
    return (inside[:limit] if limit > 0 else inside), len(inside)


RANGES = [(b"", b""), (key(100), key(4100)), (key(7000), b""), (b"n", b"")]


def test_a_large_commit_is_applied_in_slices_and_readers_wait_for_all_of_it():
    """A DeleteRange of 5,000 keys and 2,000 creates in one revision, 512
    changes a turn; a reader that runs every turn finds the index updating
    (answering nothing) or whole, at the new revision and at the old one;
    small commits made during the update land after it, in order."""
    before = {key(i) for i in range(10_000)}
    big = [C(2, key(i), True, b"v") for i in range(2000, 7000)] + [C(2, b"n%05d" % i, False, None) for i in range(2000)]
    after = (before - {key(i) for i in range(2000, 7000)}) | {b"n%05d" % i for i in range(2000)}
    later = {3: after | {key(5000)}, 4: (after | {key(5000)}) - {key(1)}}
    index = KeyIndex(1, sorted(before))

    async def run() -> tuple[int, int]:
        updating_seen = 0
        checks = 0
        task = asyncio.ensure_future(index.apply_in_slices(big, 2, slice_size=512))
        await asyncio.sleep(0)
        assert index.updating
        # two small commits while the big one is applied: they queue
        index.apply([C(3, key(5000), False, None)], 3)
        index.apply([C(4, key(1), True, b"v")], 4)
        index.forget_below(1)  # a compaction meanwhile waits too
        async def ticker() -> None:
            nonlocal updating_seen
            while not task.done():
                if index.updating:
                    updating_seen += 1
                    assert index.count(1, b"", b"") is None and index.page(2, b"", b"", 0) is None
                    assert index.advance(1)  # nothing to gather while updating
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(ticker())
        for _ in range(3):  # a reader: waits, then finds every revision whole
            await index.settled()
            assert not index.updating
            for r, live in ((1, before), (2, after), (3, later[3]), (4, later[4])):
                for start, end in RANGES:
                    assert index.count(r, start, end) == _expect(live, start, end, 0)[1]
                    page = index.page(r, start, end, 7)
                    assert page is not None and (page.keys, page.count) == _expect(live, start, end, 7)
                checks += 1
            await asyncio.sleep(0)
        await ticking
        await task
        return updating_seen, checks

    updating_seen, checks = asyncio.run(run())
    # 7,000 changes in slices of 512: the loop turned between them and the
    # reader found the index updating on each of those turns
    assert updating_seen >= 12
    assert checks >= 1
    assert index.rev == 4 and list(index.keys) == sorted(later[4])
    assert index.key_bytes == sum(map(len, later[4]))
    assert index.floor == 1


def test_apply_in_slices_is_awaited_by_a_second_caller_and_small_commits_go_at_once():
    index = KeyIndex(1, [])

    async def run() -> None:
        small = [C(2, b"a", False, None)]
        await index.apply_in_slices(small, 2, slice_size=4)
        assert not index.updating and index.rev == 2  # no turn taken
        first = asyncio.ensure_future(index.apply_in_slices([C(3, key(i), False, None) for i in range(20)], 3, slice_size=4))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(index.apply_in_slices([C(4, b"a", True, b"v")], 4, slice_size=4))
        await asyncio.sleep(0)
        assert index.updating and not second.done()
        await second
        assert first.done() and index.rev == 4 and list(index.keys) == [key(i) for i in range(20)]

    asyncio.run(run())


def test_a_caller_that_stops_waiting_does_not_stop_the_update():
    index = KeyIndex(1, [key(i) for i in range(100)])

    async def run() -> None:
        waiting = asyncio.ensure_future(index.apply_in_slices([C(2, key(i), True, b"v") for i in range(100)], 2, slice_size=10))
        assert index.updating  # from the call on, not from the first await
        await asyncio.sleep(0)
        index.apply([C(3, b"z", False, None)], 3)
        waiting.cancel()
        await index.settled()
        assert not index.updating and index.rev == 3 and list(index.keys) == [b"z"]

    asyncio.run(run())


@settings(max_examples=100, deadline=None)
@given(
    initial=st.sets(st.integers(0, 60), max_size=40),
    commits=st.lists(st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=1, max_size=30), min_size=1, max_size=6),
    slice_size=st.integers(1, 8),
    loaded_after=st.one_of(st.none(), st.integers(0, 30)),
)
def test_sliced_commits_match_a_model(initial, commits, slice_size, loaded_after):
    """Commits applied in slices, each started while the previous may still
    be applying; the key set arriving (loaded) in the middle of one. Once
    settled, every revision the index reaches answers as the model."""
    from sortedcontainers import SortedList

    init = {key(i) for i in initial}
    late = loaded_after is not None
    index = KeyIndex(1, None if late else sorted(init))
    live = set(init)
    history = {1: frozenset(live)}
    batches = []
    rev = 1
    for ops in commits:
        rev += 1
        changes = []
        for i, delete in ops:
            k = key(i)
            if delete:
                if k in live:
                    live.discard(k)
                    changes.append(C(rev, k, True, b"v"))
            else:
                changes.append(C(rev, k, False, b"v" if k in live else None))
                live.add(k)
        history[rev] = frozenset(live)
        batches.append((changes, rev))

    async def run() -> None:
        nonlocal late
        tasks = []
        turns = 0
        for changes, r in batches:
            tasks.append(asyncio.ensure_future(index.apply_in_slices(changes, r, slice_size=slice_size)))
            await asyncio.sleep(0)
            turns += 1
            if late and turns > (loaded_after or 0):
                index.loaded(SortedList(init), sum(map(len, init)))
                late = False
        if late:
            index.loaded(SortedList(init), sum(map(len, init)))
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert index.rev == rev and not index.updating
    assert list(index.keys) == sorted(live) and index.key_bytes == sum(map(len, live))
    for r, then in history.items():
        if r < index.floor:
            continue
        page = index.page(r, b"", b"", 0)
        assert page is not None and page.keys == sorted(then) and page.count == len(then)
