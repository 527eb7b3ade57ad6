"""Writes: batches apply in order, conditional commits, and commit_if races
between tasks and threads."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Coroutine

from engines.base import ConflictError, Engine, WriteBatch
from engines.conformance.checks.data import batch
from engines.conformance.harness import CheckContext, expect, expect_eq, expect_raises, short


async def check_batch_order(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(batch([(b"k3", b"old"), (b"k5", b"old")]))
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
    await engine.commit_if([], batch([(b"k8", b"1"), (b"k8", b"2"), (b"k1", None)]))
    expect_eq(await engine.batch_get([b"k8", b"k1"]), [b"2", None], "commit_if batch: later op on the same key wins")


async def check_commit_if(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.commit_if([(b"a", None)], batch([(b"a", b"1")]))
    expect_eq(await engine.get(b"a"), b"1", "commit_if expecting absence on an absent key")
    for expect_, what in (
        ([(b"a", b"2")], "a wrong value"),
        ([(b"a", None)], "absence of a present key"),
        ([(b"zz", b"1")], "a value of an absent key"),
        ([(b"a", b"1"), (b"zz", b"")], "b\"\" for an absent key (empty is not absent)"),
        ([(b"a", b"1"), (b"b", b"x")], "one of two expectations wrong"),
    ):
        await expect_raises(ConflictError, lambda: engine.commit_if(expect_, batch([(b"w", b"1"), (b"a", None)])), f"commit_if expecting {what}")
        expect_eq(await engine.batch_get([b"w", b"a"]), [None, b"1"], f"keys after a conflicting commit_if ({what}): nothing may be written")
    await engine.write(batch([(b"e", b"")]))
    await expect_raises(ConflictError, lambda: engine.commit_if([(b"e", None)], batch([(b"w", b"1")])), "commit_if expecting absence of a key holding b\"\"")
    await engine.commit_if([(b"e", b""), (b"a", b"1"), (b"nope", None)], batch([(b"w", b"2"), (b"e", None)]), sync=False)
    expect_eq(await engine.batch_get([b"w", b"e"]), [b"2", None], "commit_if with every expectation met")
    await engine.commit_if([(b"e", None)], batch([(b"w", b"3")]))
    expect_eq(await engine.get(b"w"), b"3", "commit_if expecting absence of a deleted key")
    await engine.commit_if([], batch([(b"w", b"4")]))
    expect_eq(await engine.get(b"w"), b"4", "commit_if with no expectations")


COUNTER = b"counter"


def _marker(worker: int, attempt: int) -> bytes:
    return b"attempt/%03d/%06d" % (worker, attempt)


async def counter_commit(engine: Engine, seen: bytes | None, worker: int, attempt: int, sync: bool) -> bool:
    """Increment the counter from the value seen; True if this attempt won.
    The winner also writes its marker key, so a conflicting attempt that
    wrote anything would leave a marker behind."""
    value = int(seen or b"0")
    try:
        await engine.commit_if([(COUNTER, seen)], batch([(COUNTER, b"%d" % (value + 1)), (_marker(worker, attempt), b"")]), sync=sync)
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
            if await counter_commit(engine, seen, w, r, sync=r % 2 == 0):
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
            if await counter_commit(engine, seen, w, r, sync=r % 2 == 0):
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
            if await counter_commit(engine, seen, w, attempt, sync=attempt % 2 == 0):
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
