"""Declared features (engines/features.py): an engine that declares one does
what the declaration promises. A check of a feature the engine does not
declare is skipped, saying so."""
from __future__ import annotations

import asyncio
import math
import random
from typing import Any, cast

from engines.base import ConflictError, Engine, Snapshot, ordered
from engines.conformance.checks.commits import COUNTER, counter_commit
from engines.conformance.checks.data import Items, MiB, batch, model_scan
from engines.conformance.harness import CheckContext, CheckFailed, CheckSkipped, expect, expect_eq, expect_raises, short
from engines.features import compacting, inline_sync_hint, sized, sync_counting, timed
from engines.timings import DurationHistogram


def _require(engine: Engine, feature: str, *members: str) -> None:
    """Skip unless the engine declares feature; fail when it declares it
    without the members that go with it."""
    if not getattr(engine.features, feature):
        raise CheckSkipped(f"{engine.name} does not declare {feature}")
    missing = [m for m in members if not hasattr(engine, m)]
    expect(not missing, f"{type(engine).__name__} declares {feature} but has no {', '.join(missing)}")


async def check_shared(ctx: CheckContext) -> str:
    """Two engines opened on the same data see each other's writes, and
    their conditional commits race as one engine's do."""
    first = await ctx.open()
    _require(first, "shared")
    second = await ctx.open()
    await first.write(batch([(b"shared/a", b"1"), (b"shared/b", b"2")]))
    expect_eq(await second.get(b"shared/a"), b"1", "the second engine's get of a key the first wrote")
    expect_eq(await second.scan(b"shared/", b"shared0"), [(b"shared/a", b"1"), (b"shared/b", b"2")], "the second engine's scan")
    await second.commit_if([(b"shared/a", b"1")], batch([(b"shared/a", b"10"), (b"shared/b", None)]))
    expect_eq(await first.batch_get([b"shared/a", b"shared/b"]), [b"10", None], "the first engine's reads of the second's commit")
    snap = first.snapshot()
    expect_eq(await snap.get(b"shared/a"), b"10", "a snapshot of the first engine taken after it read the second's commit")
    snap.close()
    await expect_raises(ConflictError, lambda: first.commit_if([(b"shared/a", b"1")], batch([(b"shared/never", b"1")])),
                        "commit_if on the first engine expecting the value the second replaced")
    expect_eq(await second.get(b"shared/never"), None, "a key of a commit that conflicted")
    rounds = 20
    for r in range(rounds):
        seen = await first.get(COUNTER)
        expect_eq(await second.get(COUNTER), seen, f"round {r}: the counter as the two engines read it")
        won = await asyncio.gather(*(counter_commit(e, seen, w, r, sync=True) for w, e in enumerate((first, second))))
        expect_eq(sum(won), 1, f"round {r}: commits that won a race between the two engines")
    expect_eq(await second.get(COUNTER), b"%d" % rounds, "the counter after the races")
    await first.close()
    expect_eq(await second.get(b"shared/a"), b"10", "the second engine after the first was closed")
    return f"{rounds} races between two engines on the same data"


async def check_ordered_writes(ctx: CheckContext) -> str:
    """Writes and commit_ifs started one after another, none awaited before
    the next starts, take effect in that order: each commit_if expects what
    the call before it wrote. The snapshot commit_snapshot() returns holds
    its own batch and none of the calls made after it."""
    engine = await ctx.open()
    _require(engine, "ordered_writes", "commit_snapshot")
    pipelined = ordered(engine)
    assert pipelined is not None
    n = 60
    calls: list[asyncio.Future[Any]] = [asyncio.ensure_future(engine.write(batch([(b"seq", b"0")])))]
    for i in range(1, n):
        step = batch([(b"seq", b"%d" % i), (b"step/%03d" % i, b"")])
        if i % 4 == 0:  # a blind write in the chain
            calls.append(asyncio.ensure_future(engine.write(step, sync=i % 8 == 0)))
        elif i % 4 == 2:  # one that hands back its snapshot, conditional or not
            expected = [(b"seq", b"%d" % (i - 1))] if i % 8 == 2 else []
            calls.append(asyncio.ensure_future(pipelined.commit_snapshot(expected, step, sync=i % 3 != 0)))
        else:
            calls.append(asyncio.ensure_future(engine.commit_if([(b"seq", b"%d" % (i - 1))], step, sync=i % 3 != 0)))
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    expect(not failed, f"calls made in order failed ({len(failed)} of {n}), first: call {failed[0][0] if failed else 0}: {short(failed[0][1] if failed else None)}")
    expect_eq(await engine.get(b"seq"), b"%d" % (n - 1), "the value the last call wrote")
    for i in range(2, n, 4):
        snap = cast(Snapshot, results[i])
        try:
            seen = await snap.get(b"seq")
            later = await snap.get(b"step/%03d" % (i + 1))
        finally:
            snap.close()
        expect_eq(seen, b"%d" % i, f"what the snapshot of call {i} reads (its own batch, not a later one)")
        expect_eq(later, None, f"call {i + 1}'s key in the snapshot of call {i}")
    return f"{n} calls in flight at once, {n // 4} of them handing back their snapshot"


async def check_inline_sync_hint(ctx: CheckContext) -> str:
    """When syncs_inline() says a synced write made now runs on the caller's
    thread, the write returns without suspending the caller."""
    engine = await ctx.open()
    _require(engine, "inline_sync_hint", "syncs_inline")
    hint = inline_sync_hint(engine)
    assert hint is not None
    inline = 0
    rounds = 20
    for i in range(rounds):
        says = hint()
        expect(isinstance(says, bool), f"syncs_inline() returned {short(says)}, not a bool")
        call = engine.write(batch([(b"inline/%02d" % i, b"x" * 100)]), sync=True)
        if not says:
            await call
            continue
        try:
            call.send(None)
        except StopIteration:
            inline += 1
            continue
        call.close()
        raise CheckFailed(f"syncs_inline() said True, yet synced write {i} suspended its caller")
    expect_eq(len(await engine.scan(b"inline/", b"inline0", keys_only=True)), rounds, "keys written")
    return f"{inline} of {rounds} synced writes inline"


async def check_disk_size(ctx: CheckContext) -> str:
    """disk_size() grows once incompressible data is written, and
    bytes_written counts at least the bytes written."""
    engine = await ctx.open()
    _require(engine, "disk_size", "disk_size", "bytes_written")
    measured = sized(engine)
    assert measured is not None
    size0, written0 = measured.disk_size(), measured.bytes_written
    expect(isinstance(size0, int) and size0 >= 0, f"disk_size() returned {short(size0)}, not an int >= 0")
    expect(isinstance(written0, int) and written0 >= 0, f"bytes_written is {short(written0)}, not an int >= 0")
    rng = random.Random(5)
    total = 0
    for i in range(32):
        value = rng.randbytes(64 << 10)
        total += len(value)
        await engine.write(batch([(b"size/%02d" % i, value)]), sync=i % 8 == 7)
    size1, written1 = measured.disk_size(), measured.bytes_written
    expect(written1 - written0 >= total, f"bytes_written grew by {written1 - written0} after {total} bytes of values were written")
    expect(size1 - size0 >= total // 2, f"disk_size() grew from {size0} to {size1} after {total} bytes of incompressible values were written")
    return f"{size0} -> {size1} bytes after {total // MiB} MiB"


async def check_compact_range(ctx: CheckContext) -> str:
    """compact_range() after overwrites and deletes leaves the data, and a
    snapshot taken before it, as they were; the engine goes on working."""
    engine = await ctx.open()
    _require(engine, "compact_range", "compact_range")
    rng = random.Random(6)
    model: dict[bytes, bytes] = {}
    for r in range(4):
        wb = batch([])
        for _ in range(300):
            k = b"compact/%04d" % rng.randrange(500)
            if rng.random() < 0.25:
                wb.delete(k)
                model.pop(k, None)
            else:
                v = rng.randbytes(rng.randint(0, 200))
                wb.put(k, v)
                model[k] = v
        await engine.write(wb, sync=r == 3)
    before: Items = sorted(model.items())
    snap = engine.snapshot()
    compact = compacting(engine)
    assert compact is not None
    await compact.compact_range()
    expect_eq(await engine.scan(b"", None), before, "contents after compact_range()")
    expect_eq(await snap.scan(b"compact/", b"compact0", limit=50), model_scan(before, b"compact/", b"compact0", 50), "a snapshot taken before compact_range()")
    snap.close()
    await engine.write(batch([(b"compact/after", b"1")]))
    expect_eq(await engine.get(b"compact/after"), b"1", "a write after compact_range()")
    if engine.durable:
        engine = await ctx.reopen(engine)
        expect_eq(await engine.scan(b"compact/", b"compact0"), sorted([*before, (b"compact/after", b"1")]), "contents after compact_range() and a reopen")
    return f"{len(before)} keys intact"


def _histogram(engine: Any, name: str) -> DurationHistogram:
    h = getattr(engine, name)
    expect(isinstance(h, DurationHistogram), f"{name} is a {type(h).__name__}, not a DurationHistogram")
    return h


async def check_latency_histograms(ctx: CheckContext) -> str:
    """Every commit is counted in commit_durations, and a durable engine's
    synced commits in fsync_durations."""
    engine = await ctx.open()
    _require(engine, "latency_histograms", "fsync_durations", "commit_durations")
    assert timed(engine) is not None
    fsyncs, commits = _histogram(engine, "fsync_durations"), _histogram(engine, "commit_durations")
    fsync0, commit0 = fsyncs.count, commits.count
    n = 10
    for i in range(n):
        await engine.write(batch([(b"timed/%02d" % i, b"v")]), sync=i % 2 == 0)
    await engine.commit_if([(b"timed/00", b"v")], batch([(b"timed/00", b"w")]))
    expect(commits.count - commit0 >= n + 1, f"commit_durations counted {commits.count - commit0} of {n + 1} commits")
    if engine.durable:
        expect(fsyncs.count > fsync0, f"fsync_durations counted no sync over {n // 2 + 1} synced commits")
    expect(math.isfinite(commits.total_seconds) and commits.total_seconds >= 0, f"commit_durations' total is {commits.total_seconds}")
    return f"{commits.count - commit0} commits, {fsyncs.count - fsync0} syncs"


async def check_sync_counters(ctx: CheckContext) -> str:
    """Each synced write is counted once, inline or on the engine's thread,
    and the moving average of their durations is a duration."""
    engine = await ctx.open()
    _require(engine, "sync_counters", "sync_seconds", "synced_inline", "synced_on_thread")
    counters = sync_counting(engine)
    assert counters is not None
    before = counters.synced_inline + counters.synced_on_thread
    n = 12
    for i in range(n):
        await engine.write(batch([(b"synced/%02d" % i, b"v")]), sync=True)
        await engine.write(batch([(b"unsynced/%02d" % i, b"v")]), sync=False)
    counted = counters.synced_inline + counters.synced_on_thread - before
    expect_eq(counted, n, "synced writes counted (inline + on the thread) after n synced and n unsynced writes")
    average = counters.sync_seconds
    expect(isinstance(average, float) and math.isfinite(average) and average > 0, f"sync_seconds is {short(average)} after {n} synced writes")
    return f"average {average * 1e3:.3f} ms"

