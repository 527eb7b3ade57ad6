"""The conformance checks: each one a property of the contract in engines/base.py.

Every check opens a fresh engine in its own slot (data directory), so checks
are independent and can run in any order or alone. Random data comes from
seeded generators: a failure reproduces.
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
from typing import Any, Callable, Coroutine

from engines.base import ConflictError, Engine, EngineClosedError, EngineLockedError, Snapshot, WriteBatch, prefix_end
from engines.conformance import child as layout
from engines.conformance.harness import Check, CheckContext, CheckSkipped, expect, expect_eq, expect_raises, short
from engines.conformance.processes import run_once, stream_then_kill

Items = list[tuple[bytes, bytes]]
Reader = Engine | Snapshot

MiB = 1 << 20


def _batch(items: Any) -> WriteBatch:
    wb = WriteBatch()
    for k, v in items:
        wb.ops.append((k, v))
    return wb


def model_scan(items: Items, start: bytes, end: bytes | None, limit: int = 0, reverse: bool = False, keys_only: bool = False) -> Items:
    """What scan must return, computed from a sorted list of all pairs."""
    out = [(k, b"" if keys_only else v) for k, v in items if k >= start and (end is None or k < end)]
    if reverse:
        out.reverse()
    return out[:limit] if limit else out


async def _fill(engine: Engine, items: Items, chunk: int = 64) -> None:
    for i in range(0, len(items), chunk):
        await engine.write(_batch(items[i : i + chunk]), sync=False)


async def check_open(ctx: CheckContext) -> str:
    engine = await ctx.open()
    expect(isinstance(engine, Engine), f"{type(engine).__name__} does not implement the Engine protocol")
    await engine.write(_batch([(b"hello", b"world")]))
    expect_eq(await engine.get(b"hello"), b"world", "get after write")
    snap = engine.snapshot()
    expect(isinstance(snap, Snapshot), f"{type(snap).__name__} does not implement the Snapshot protocol")
    snap.close()
    await engine.close()
    return f"{type(engine).__name__}, durable={engine.durable}"


# keys chosen to catch signed-byte comparisons, length-first comparisons and
# string (NUL-terminated) handling
EDGE_KEYS = [
    b"\x00", b"\x00\x00", b"\x00\x01", b"\x01", b"\x7f", b"\x80", b"\x80\x00", b"\xfe", b"\xff",
    b"\xff\x00", b"\xff\xff", b"\xff\xff\xff", b"a", b"a\x00", b"a\x00b", b"a\xff", b"ab", b"abc",
    b"abc\x00", b"b", b"/registry/pods", b"/registry/pods/", b"/registry/pods/default/x",
]


def _ordering_items(seed: int = 1) -> Items:
    rng = random.Random(seed)
    keys = set(EDGE_KEYS)
    while len(keys) < 500:
        n = rng.randint(1, 12)
        keys.add(bytes(rng.choice((0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, rng.randrange(256))) for _ in range(n)))
    out: Items = []
    for i, k in enumerate(sorted(keys)):
        # every 5th value is empty: b"" must come back as b"", never as None
        out.append((k, b"" if i % 5 == 0 else rng.randbytes(rng.randint(1, 40))))
    return out


async def check_ordering(ctx: CheckContext) -> str:
    engine = await ctx.open()
    want = _ordering_items()
    shuffled = list(want)
    random.Random(2).shuffle(shuffled)
    await _fill(engine, shuffled)
    expect_eq(await engine.scan(b"", None), want, "full scan vs sorted(keys)")
    expect_eq(await engine.scan(b"", None, reverse=True), want[::-1], "full reverse scan")
    for k, v in want:
        got = await engine.get(k)
        expect(got == v and got is not None, f"get({short(k)}) = {short(got)}, expected {short(v)}")
    return f"{len(want)} keys"


# bounds around and between the stored keys: present, absent, prefixes, extremes
BOUNDS = [b"", b"\x00", b"a", b"a\x00", b"aa", b"ab", b"ab\x00", b"abc", b"abd", b"b", b"b\x00", b"c", b"\xff", b"\xff\xff"]
SCAN_KEYS = [b"\x00", b"a", b"aa", b"ab", b"ab\x00", b"abc", b"b", b"ba", b"c", b"\xff", b"\xff\xff\x00"]


async def _scan_sweep(engine: Engine | Snapshot, items: Items, limits: tuple[int, ...], reverse: bool, keys_only: bool) -> int:
    n = 0
    for start in BOUNDS:
        for end in [None, *BOUNDS]:
            if end is not None and end < start:
                continue
            for limit in limits:
                got = await engine.scan(start, end, limit=limit, reverse=reverse, keys_only=keys_only)
                want = model_scan(items, start, end, limit, reverse, keys_only)
                expect_eq(got, want, f"scan({short(start)}, {short(end)}, limit={limit}, reverse={reverse}, keys_only={keys_only})")
                n += 1
    return n


async def _scan_engine(ctx: CheckContext) -> tuple[Engine, Items]:
    engine = await ctx.open()
    items = [(k, b"v-" + k) for k in SCAN_KEYS]
    await _fill(engine, items)
    return engine, items


async def check_scan_bounds(ctx: CheckContext) -> str:
    engine, items = await _scan_engine(ctx)
    n = await _scan_sweep(engine, items, (0,), reverse=False, keys_only=False)
    return f"{n} ranges"


async def check_scan_limit(ctx: CheckContext) -> str:
    engine, items = await _scan_engine(ctx)
    n = await _scan_sweep(engine, items, (1, 2, 3, 100), reverse=False, keys_only=False)
    return f"{n} ranges"


async def check_scan_reverse(ctx: CheckContext) -> str:
    engine, items = await _scan_engine(ctx)
    n = await _scan_sweep(engine, items, (0, 1, 2, 3, 100), reverse=True, keys_only=False)
    return f"{n} ranges"


async def check_keys_only(ctx: CheckContext) -> str:
    engine, items = await _scan_engine(ctx)
    n = await _scan_sweep(engine, items, (0, 2), reverse=False, keys_only=True)
    n += await _scan_sweep(engine, items, (0, 2), reverse=True, keys_only=True)
    return f"{n} ranges"


async def check_batch_get(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(_batch([(b"a", b"1"), (b"b", b""), (b"c", b"3"), (b"\xff", b"ff")]))
    keys = [b"c", b"missing", b"a", b"b", b"a", b"\x00", b"\xff"]
    expect_eq(await engine.batch_get(keys), [b"3", None, b"1", b"", b"1", None, b"ff"], "batch_get (order, duplicates, absent, empty value)")
    expect_eq(await engine.batch_get([]), [], "batch_get([])")
    expect_eq(await engine.batch_get((b"a",)), [b"1"], "batch_get of a tuple")
    snap = engine.snapshot()
    expect_eq(await snap.batch_get(keys), [b"3", None, b"1", b"", b"1", None, b"ff"], "snapshot batch_get")
    snap.close()


async def check_large_values(ctx: CheckContext) -> str:
    engine = await ctx.open()
    rng = random.Random(3)
    size = 3 * MiB // 2
    big1, big2, big3 = rng.randbytes(size), rng.randbytes(size), rng.randbytes(size + 1)
    await engine.write(_batch([(b"big/1", big1), (b"big/2", big2), (b"big/small", b"s")]))
    await engine.write(_batch([(b"big/3", big3)]))
    expect(await engine.get(b"big/1") == big1, "1.5 MiB value big/1 did not read back intact")
    expect_eq(await engine.batch_get([b"big/2", b"big/3"]) == [big2, big3], True, "batch_get of 1.5 MiB values intact")
    got = await engine.scan(b"big/", b"big0")
    expect_eq([k for k, _ in got], [b"big/1", b"big/2", b"big/3", b"big/small"], "scan keys over 1.5 MiB values")
    expect(got[0][1] == big1 and got[1][1] == big2 and got[2][1] == big3, "scan returned 1.5 MiB values altered")
    snap = engine.snapshot()
    await engine.write(_batch([(b"big/1", big2)]))  # overwrite with another large value
    expect(await snap.get(b"big/1") == big1, "snapshot lost the old 1.5 MiB value after an overwrite")
    expect(await engine.get(b"big/1") == big2, "1.5 MiB overwrite did not read back intact")
    snap.close()
    if engine.durable:
        engine = await ctx.reopen(engine)
        expect(await engine.get(b"big/1") == big2 and await engine.get(b"big/3") == big3, "1.5 MiB values changed across reopen")
        return "also across reopen"
    return "in memory"


async def check_batch_order(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(_batch([(b"k3", b"old"), (b"k5", b"old")]))
    wb = WriteBatch()
    wb.put(b"k1", b"v1")
    wb.put(b"k1", b"v2")  # put, put: the later value
    wb.put(b"k2", b"x")
    wb.delete(b"k2")  # put, delete: absent
    wb.delete(b"k3")
    wb.put(b"k3", b"new")  # delete, put: present
    wb.put(b"k4", b"a")
    wb.delete(b"k4")
    wb.put(b"k4", b"b")  # put, delete, put
    wb.put(b"k5", b"mid")
    wb.delete(b"k5")  # existing key: put, delete
    wb.delete(b"k6")  # deleting an absent key is not an error
    for i in range(100):
        wb.put(b"k7", b"%d" % i)
    await engine.write(wb)
    want = {b"k1": b"v2", b"k2": None, b"k3": b"new", b"k4": b"b", b"k5": None, b"k6": None, b"k7": b"99"}
    for k, v in want.items():
        expect_eq(await engine.get(k), v, f"get({k!r}) after a batch with several ops on it")
    expect_eq(await engine.scan(b"k", b"l"), [(k, v) for k, v in sorted(want.items()) if v is not None], "scan after the batch")
    await engine.write(WriteBatch())  # an empty batch is a no-op
    await engine.commit_if([], _batch([(b"k8", b"1"), (b"k8", b"2"), (b"k1", None)]))
    expect_eq(await engine.batch_get([b"k8", b"k1"]), [b"2", None], "commit_if batch: later op on the same key wins")


async def check_commit_if(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.commit_if([(b"a", None)], _batch([(b"a", b"1")]))
    expect_eq(await engine.get(b"a"), b"1", "commit_if expecting absence on an absent key")
    for expect_, what in (
        ([(b"a", b"2")], "a wrong value"),
        ([(b"a", None)], "absence of a present key"),
        ([(b"zz", b"1")], "a value of an absent key"),
        ([(b"a", b"1"), (b"zz", b"")], "b\"\" for an absent key (empty is not absent)"),
        ([(b"a", b"1"), (b"b", b"x")], "one of two expectations wrong"),
    ):
        await expect_raises(ConflictError, lambda: engine.commit_if(expect_, _batch([(b"w", b"1"), (b"a", None)])), f"commit_if expecting {what}")
        expect_eq(await engine.batch_get([b"w", b"a"]), [None, b"1"], f"keys after a conflicting commit_if ({what}): nothing may be written")
    await engine.write(_batch([(b"e", b"")]))
    await expect_raises(ConflictError, lambda: engine.commit_if([(b"e", None)], _batch([(b"w", b"1")])), "commit_if expecting absence of a key holding b\"\"")
    await engine.commit_if([(b"e", b""), (b"a", b"1"), (b"nope", None)], _batch([(b"w", b"2"), (b"e", None)]), sync=False)
    expect_eq(await engine.batch_get([b"w", b"e"]), [b"2", None], "commit_if with every expectation met")
    await engine.commit_if([(b"e", None)], _batch([(b"w", b"3")]))
    expect_eq(await engine.get(b"w"), b"3", "commit_if expecting absence of a deleted key")
    await engine.commit_if([], _batch([(b"w", b"4")]))
    expect_eq(await engine.get(b"w"), b"4", "commit_if with no expectations")


COUNTER = b"counter"


def _marker(worker: int, attempt: int) -> bytes:
    return b"attempt/%03d/%06d" % (worker, attempt)


async def _counter_commit(engine: Engine, seen: bytes | None, worker: int, attempt: int, sync: bool) -> bool:
    """Increment the counter from the value seen; True if this attempt won.
    The winner also writes its marker key, so a conflicting attempt that
    wrote anything would leave a marker behind."""
    value = int(seen or b"0")
    try:
        await engine.commit_if([(COUNTER, seen)], _batch([(COUNTER, b"%d" % (value + 1)), (_marker(worker, attempt), b"")]), sync=sync)
    except ConflictError:
        return False
    return True


async def _verify_counter(engine: Engine, wins: set[tuple[int, int]]) -> None:
    expect_eq(await engine.get(COUNTER), b"%d" % len(wins), "counter vs number of successful commit_if calls")
    markers = [k for k, _ in await engine.scan(b"attempt/", b"attempt0", keys_only=True)]
    expect_eq(markers, sorted(_marker(w, a) for w, a in wins), "attempt markers: exactly the successful commits may have written")


def _round_winners(wins: set[tuple[int, int]], rounds: int) -> None:
    per_round = [0] * rounds
    for _, r in wins:
        per_round[r] += 1
    bad = [(r, n) for r, n in enumerate(per_round) if n != 1]
    expect(not bad, f"rounds without exactly one winner (round, winners): {bad[:5]}")


async def check_contention_tasks(ctx: CheckContext) -> str:
    """16 asyncio tasks: in each round all read the counter, then all race
    commit_if on the value they read; exactly one may win."""
    engine = await ctx.open()
    tasks, rounds = 16, 40
    barrier = asyncio.Barrier(tasks)
    wins: set[tuple[int, int]] = set()

    async def worker(w: int) -> None:
        for r in range(rounds):
            seen = await engine.get(COUNTER)
            await barrier.wait()  # nobody commits before everyone has read
            if await _counter_commit(engine, seen, w, r, sync=r % 2 == 0):
                wins.add((w, r))
            await barrier.wait()  # the round is over before anyone reads again

    await asyncio.gather(*(worker(w) for w in range(tasks)))
    _round_winners(wins, rounds)
    await _verify_counter(engine, wins)
    return f"{tasks} tasks x {rounds} rounds"


def _in_threads(n: int, fn: Callable[[int], Coroutine[Any, Any, None]]) -> list[BaseException]:
    """Run fn(i) on n threads, each with its own event loop; their errors."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            asyncio.run(fn(i))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), name=f"contender-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


async def check_contention_threads(ctx: CheckContext) -> str:
    """The same race between threads, each running its own event loop."""
    engine = await ctx.open()
    threads, rounds = 4, 30
    barrier = threading.Barrier(threads, timeout=60)
    wins: set[tuple[int, int]] = set()
    lock = threading.Lock()

    async def worker(w: int) -> None:
        for r in range(rounds):
            seen = await engine.get(COUNTER)
            barrier.wait()
            if await _counter_commit(engine, seen, w, r, sync=r % 2 == 0):
                with lock:
                    wins.add((w, r))
            barrier.wait()

    errors = await asyncio.to_thread(_in_threads, threads, worker)
    expect(not errors, f"contender threads failed: {short([repr(e) for e in errors])}")
    _round_winners(wins, rounds)
    await _verify_counter(engine, wins)
    return f"{threads} threads x {rounds} rounds"


async def check_contention_free(ctx: CheckContext) -> str:
    """Free-running read-then-commit_if increments with retries, from 8 tasks
    here and 3 threads with 2 tasks each: no increment may be lost."""
    engine = await ctx.open()
    each = 15
    wins: set[tuple[int, int]] = set()
    conflicts = [0]
    lock = threading.Lock()

    async def worker(w: int) -> None:
        done = 0
        for attempt in range(each * 400):
            if done == each:
                return
            seen = await engine.get(COUNTER)
            await asyncio.sleep(0)  # let the others read the same value
            if await _counter_commit(engine, seen, w, attempt, sync=attempt % 2 == 0):
                with lock:
                    wins.add((w, attempt))
                done += 1
            else:
                with lock:
                    conflicts[0] += 1
        raise AssertionError(f"worker {w} made only {done} increments in {each * 400} attempts")

    async def thread_main(t: int) -> None:
        await asyncio.gather(worker(100 + 2 * t), worker(101 + 2 * t))

    threaded = asyncio.create_task(asyncio.to_thread(_in_threads, 3, thread_main))
    results = await asyncio.gather(*(worker(w) for w in range(8)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)] + await threaded
    expect(not errors, f"contenders failed: {short([repr(e) for e in errors])}")
    expect_eq(len(wins), 14 * each, "successful increments")
    await _verify_counter(engine, wins)
    return f"{len(wins)} increments, {conflicts[0]} conflicts"


async def _expect_view(reader: Reader, want: dict[bytes, bytes], what: str) -> None:
    items = sorted(want.items())
    keys = [b"a", b"b", b"c", b"d", b"e", b"m0", b"m5", b"zz"]
    for k in keys:
        expect_eq(await reader.get(k), want.get(k), f"{what}: get({k!r})")
    expect_eq(await reader.batch_get(keys), [want.get(k) for k in keys], f"{what}: batch_get")
    expect_eq(await reader.scan(b"", None), items, f"{what}: scan")
    expect_eq(await reader.scan(b"b", b"m", limit=2), model_scan(items, b"b", b"m", 2), f"{what}: scan with limit")
    expect_eq(await reader.scan(b"", None, limit=3, reverse=True), model_scan(items, b"", None, 3, True), f"{what}: reverse scan with limit")
    expect_eq(await reader.scan(b"", b"m", keys_only=True), model_scan(items, b"", b"m", keys_only=True), f"{what}: keys_only scan")


async def check_snapshot_isolation(ctx: CheckContext) -> None:
    engine = await ctx.open()
    v1 = {b"a": b"1", b"b": b"2", b"c": b"3"}
    await engine.write(_batch(v1.items()))
    s1 = engine.snapshot()
    await engine.write(_batch([(b"a", b"10"), (b"b", None), (b"d", b"4")]))
    v2 = {b"a": b"10", b"c": b"3", b"d": b"4"}
    s2 = engine.snapshot()
    for i in range(200):  # many later versions: old ones must stay readable
        await engine.write(_batch([(b"a", b"a%d" % i), (b"m%d" % (i % 10), b"%d" % i)]), sync=i % 50 == 0)
    await engine.write(_batch([(b"c", None), (b"b", b"20"), (b"e", b"")]))
    latest = {b"a": b"a199", b"b": b"20", b"d": b"4", b"e": b""} | {b"m%d" % j: b"%d" % (190 + j) for j in range(10)}
    await _expect_view(s1, v1, "snapshot 1 after later writes and deletes")
    await _expect_view(s2, v2, "snapshot 2 after later writes and deletes")
    await _expect_view(engine, latest, "engine")
    s3 = engine.snapshot()
    await _expect_view(s3, latest, "a new snapshot")
    s1.close()
    await expect_raises(EngineClosedError, lambda: s1.get(b"a"), "get on a closed snapshot")
    await _expect_view(s2, v2, "snapshot 2 after snapshot 1 was closed")
    # the MVCC layer drops snapshots without closing them: that must be safe
    del s2
    await engine.write(_batch([(b"a", b"x")]))
    await _expect_view(s3, latest, "snapshot 3 after snapshot 2 was dropped")
    s3.close()
    s3.close()  # closing twice is harmless


async def check_use_after_close(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(_batch([(b"a", b"1")]))
    snap, closed_snap = engine.snapshot(), engine.snapshot()
    closed_snap.close()
    for what, fn in (
        ("get", lambda: closed_snap.get(b"a")),
        ("batch_get", lambda: closed_snap.batch_get([b"a"])),
        ("scan", lambda: closed_snap.scan(b"", None)),
    ):
        await expect_raises(EngineClosedError, fn, f"snapshot {what} after snapshot close()")
    await engine.close()
    await engine.close()  # closing twice is harmless
    for what, call in (
        ("get", lambda: engine.get(b"a")),
        ("batch_get", lambda: engine.batch_get([b"a"])),
        ("scan", lambda: engine.scan(b"", None)),
        ("write", lambda: engine.write(_batch([(b"b", b"2")]))),
        ("unsynced write", lambda: engine.write(_batch([(b"b", b"2")]), sync=False)),
        ("commit_if", lambda: engine.commit_if([], _batch([(b"b", b"2")]))),
        ("snapshot", engine.snapshot),
        ("snapshot get", lambda: snap.get(b"a")),
        ("snapshot batch_get", lambda: snap.batch_get([b"a"])),
        ("snapshot scan", lambda: snap.scan(b"", None)),
    ):
        await expect_raises(EngineClosedError, call, f"{what} after engine close()")
    snap.close()  # closing a snapshot of a closed engine is harmless


async def check_bad_arguments(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(_batch([(b"a", b"1")]))
    snap = engine.snapshot()
    for reader, name in ((engine, "engine"), (snap, "snapshot")):
        for what, fn in (
            ("get(str)", lambda: reader.get("a")),  # type: ignore[arg-type]
            ("get(None)", lambda: reader.get(None)),  # type: ignore[arg-type]
            ("get(int)", lambda: reader.get(1)),  # type: ignore[arg-type]
            ("batch_get with a str key", lambda: reader.batch_get([b"a", "b"])),  # type: ignore[list-item]
            ("scan(str start)", lambda: reader.scan("a", None)),  # type: ignore[arg-type]
            ("scan(str end)", lambda: reader.scan(b"a", "b")),  # type: ignore[arg-type]
        ):
            e = await expect_raises(TypeError, fn, f"{name} {what}")
            expect("bytes" in str(e), f"{name} {what}: the TypeError should say keys must be bytes, said {str(e)!r}")
        e = await expect_raises(ValueError, lambda: reader.scan(b"b", b"a"), f"{name} scan with end < start")
        expect(len(str(e)) > 10, f"{name} inverted range: ValueError without a clear message: {str(e)!r}")
        await expect_raises(ValueError, lambda: reader.scan(b"a", None, limit=-1), f"{name} scan with a negative limit")
    snap.close()
    for what, wb in (
        ("str key", _batch([(b"ok", b"1"), ("bad", b"2")])),
        ("int key", _batch([(b"ok", b"1"), (7, b"2")])),
        ("str value", _batch([(b"ok", b"1"), (b"bad", "2")])),
    ):
        for sync in (True, False):
            await expect_raises(TypeError, lambda: engine.write(wb, sync=sync), f"write with a {what} (sync={sync})")
            expect_eq(await engine.get(b"ok"), None, f"after a rejected write with a {what}: nothing may be written")
    # wrong types on purpose: the engine must refuse them
    await expect_raises(TypeError, lambda: engine.commit_if([("a", b"1")], _batch([(b"ok", b"1")])), "commit_if expecting a str key")  # type: ignore[list-item]
    await expect_raises(TypeError, lambda: engine.commit_if([(b"a", "1")], _batch([(b"ok", b"1")])), "commit_if expecting a str value")  # type: ignore[list-item]
    await expect_raises(TypeError, lambda: engine.commit_if([(b"a", b"1")], _batch([(b"ok", 1)])), "commit_if with an int value")
    expect_eq(await engine.get(b"ok"), None, "after rejected commit_if calls: nothing may be written")
    expect_eq(await engine.get(b"a"), b"1", "the engine still works after bad arguments")


async def check_reopen(ctx: CheckContext) -> None:
    engine = await ctx.open()
    ctx.require_durable(engine)
    await engine.write(_batch([(b"synced", b"1"), (b"gone", b"x")]))
    await engine.write(_batch([(b"unsynced", b"2"), (b"gone", None)]), sync=False)
    await engine.commit_if([(b"synced", b"1")], _batch([(b"cas", b"3")]))
    engine = await ctx.reopen(engine)
    expect_eq(await engine.scan(b"", None), [(b"cas", b"3"), (b"synced", b"1"), (b"unsynced", b"2")], "contents after close() and reopen")


async def check_kill_atomicity(ctx: CheckContext) -> str:
    """A writer of large multi-key batches is SIGKILLed mid-stream: after
    reopening, the last batch is wholly there or wholly absent."""
    probe = await ctx.open()
    ctx.require_durable(probe)
    await probe.close()
    notes = []
    for round_ in range(2):
        slot = f"{ctx.slot}-{round_}"
        acked = stream_then_kill("atomic-writer", ctx.target, slot, min_acks=20 + 15 * round_, max_seconds=3, jitter=0.02, rng_seed=round_)
        engine = await ctx.open(slot)
        values = await engine.batch_get([layout.atomic_key(j) for j in range(layout.ATOMIC_KEYS)])
        one = [k for k, _ in await engine.scan(layout.ATOMIC_PREFIX + b"one/", layout.ATOMIC_PREFIX + b"one0", keys_only=True)]
        done = [k for k, _ in await engine.scan(layout.ATOMIC_PREFIX + b"done/", layout.ATOMIC_PREFIX + b"done0", keys_only=True)]
        ids = {None if v is None else v.split(b"|", 1)[0] for v in values}
        expect(len(ids) == 1, f"round {round_}: a batch was torn: its keys hold batch ids {sorted(map(str, ids))[:6]}")
        last = ids.pop()
        if last is None:
            expect(not one and not done, f"round {round_}: no batch complete, yet markers {short(one + done)} exist")
        else:
            n = int(last)
            filler_ok = all(v == last + b"|" + b"x" * layout.ATOMIC_FILLER for v in values)
            expect(filler_ok, f"round {round_}: batch {n} values were altered")
            expect_eq(one, [layout.atomic_one(n)], f"round {round_}: the key moved by each batch (last batch {n})")
            expect_eq(done, [layout.atomic_done(i) for i in range(n + 1)], f"round {round_}: done markers of batches 0..{n}")
        await engine.close()
        notes.append(f"{len(acked)} acked/{'none' if last is None else int(last) + 1} present")
    return "; ".join(notes)


async def check_kill_durability(ctx: CheckContext) -> str:
    """Every batch acknowledged by a synced write() survives SIGKILL."""
    probe = await ctx.open()
    ctx.require_durable(probe)
    await probe.close()
    acked = stream_then_kill("durable-writer", ctx.target, ctx.slot, min_acks=60, max_seconds=3, jitter=0.01, rng_seed=7)
    expect(acked, "the writer was never acknowledged")
    engine = await ctx.open()
    stored = await engine.scan(layout.DURABLE_PREFIX, prefix_end(layout.DURABLE_PREFIX))
    batches: dict[int, list[tuple[bytes, bytes]]] = {}
    for k, v in stored:
        batches.setdefault(int(k[len(layout.DURABLE_PREFIX) :].split(b"/")[0]), []).append((k, v))
    lost = sorted(set(acked) - set(batches))
    expect(not lost, f"acknowledged batches lost after SIGKILL: {lost[:10]} ({len(lost)} of {len(acked)})")
    for i, kvs in batches.items():
        want = [(layout.durable_key(i, j), layout.batch_id(i)) for j in range(layout.DURABLE_KEYS)]
        expect_eq(kvs, want, f"batch {i} after SIGKILL")
    expect_eq(sorted(batches), list(range(len(batches))), "stored batch ids (a later batch without an earlier one)")
    return f"{len(acked)} acked, {len(batches)} present"


async def check_locked_data_dir(ctx: CheckContext) -> str:
    engine = await ctx.open()
    ctx.require_durable(engine)
    data_dir = ctx.data_dir()
    if data_dir is None:
        raise CheckSkipped(f"{engine.name} has no data directory")
    report = json.loads(run_once("try-open", ctx.target, ctx.slot))
    expect(report.get("error") == EngineLockedError.__name__, f"a second process opening {data_dir} got {report}, expected EngineLockedError")
    expect(data_dir in report.get("message", ""), f"the EngineLockedError message should name {data_dir}: {report.get('message')!r}")
    await engine.close()
    report = json.loads(run_once("try-open", ctx.target, ctx.slot))
    expect(report.get("opened") is True, f"after close() another process still cannot open {data_dir}: {report}")
    return "second process refused, then admitted after close()"


CHECKS: tuple[Check, ...] = (
    Check("open", check_open, "the engine opens, writes, reads, snapshots and closes"),
    Check("ordering", check_ordering, "arbitrary byte keys (0x00, 0xff, prefixes, random) scan in sorted() order; empty values"),
    Check("scan-bounds", check_scan_bounds, "scan returns exactly [start, end); end None is unbounded"),
    Check("scan-limit", check_scan_limit, "scan limits"),
    Check("scan-reverse", check_scan_reverse, "reverse scans, with and without limits"),
    Check("keys-only", check_keys_only, "keys_only scans return b\"\" values"),
    Check("batch-get", check_batch_get, "batch_get order, duplicates, absent keys"),
    Check("large-values", check_large_values, "1.5 MiB values"),
    Check("batch-order", check_batch_order, "within a batch, the later op on a key wins"),
    Check("commit-if", check_commit_if, "commit_if semantics; a conflict writes nothing"),
    Check("contention-tasks", check_contention_tasks, "commit_if races between 16 asyncio tasks"),
    Check("contention-threads", check_contention_threads, "commit_if races between threads"),
    Check("contention-free", check_contention_free, "free-running commit_if increments lose nothing"),
    Check("snapshot-isolation", check_snapshot_isolation, "snapshots do not see later writes and deletes"),
    Check("use-after-close", check_use_after_close, "EngineClosedError after close()"),
    Check("bad-arguments", check_bad_arguments, "TypeError/ValueError for bad arguments, nothing written"),
    Check("reopen", check_reopen, "contents survive close() and reopen (durable engines)"),
    Check("kill-atomicity", check_kill_atomicity, "SIGKILL mid-stream: every batch all-or-nothing (durable engines)"),
    Check("kill-durability", check_kill_durability, "SIGKILL: acknowledged synced batches survive (durable engines)"),
    Check("locked-data-dir", check_locked_data_dir, "a second process gets EngineLockedError (durable engines with a data dir)"),
)
