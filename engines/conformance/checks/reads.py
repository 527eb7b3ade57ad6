"""Reads: the engine opens; keys order as bytes; scans keep their bounds,
limits and direction; batch gets; large values."""
from __future__ import annotations

import random

from engines.base import Engine, Snapshot
from engines.features import EngineFeatures
from engines.conformance.checks.data import MiB, Items, batch, fill, model_scan
from engines.conformance.harness import CheckContext, expect, expect_eq, short


async def check_open(ctx: CheckContext) -> str:
    engine = await ctx.open()
    expect(isinstance(engine, Engine), f"{type(engine).__name__} does not implement the Engine protocol")
    await engine.write(batch([(b"hello", b"world")]))
    expect_eq(await engine.get(b"hello"), b"world", "get after write")
    snap = engine.snapshot()
    expect(isinstance(snap, Snapshot), f"{type(snap).__name__} does not implement the Snapshot protocol")
    snap.close()
    await engine.close()
    features = engine.features
    expect(isinstance(features, EngineFeatures), f"{type(engine).__name__}.features is a {type(features).__name__}, not an EngineFeatures")
    return f"{type(engine).__name__}, durable={engine.durable}, features: {', '.join(features.declared()) or 'none'}"


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
    await fill(engine, shuffled)
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
    await fill(engine, items)
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
    await engine.write(batch([(b"a", b"1"), (b"b", b""), (b"c", b"3"), (b"\xff", b"ff")]))
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
    await engine.write(batch([(b"big/1", big1), (b"big/2", big2), (b"big/small", b"s")]))
    await engine.write(batch([(b"big/3", big3)]))
    expect(await engine.get(b"big/1") == big1, "1.5 MiB value big/1 did not read back intact")
    expect_eq(await engine.batch_get([b"big/2", b"big/3"]) == [big2, big3], True, "batch_get of 1.5 MiB values intact")
    got = await engine.scan(b"big/", b"big0")
    expect_eq([k for k, _ in got], [b"big/1", b"big/2", b"big/3", b"big/small"], "scan keys over 1.5 MiB values")
    expect(got[0][1] == big1 and got[1][1] == big2 and got[2][1] == big3, "scan returned 1.5 MiB values altered")
    snap = engine.snapshot()
    await engine.write(batch([(b"big/1", big2)]))  # overwrite with another large value
    expect(await snap.get(b"big/1") == big1, "snapshot lost the old 1.5 MiB value after an overwrite")
    expect(await engine.get(b"big/1") == big2, "1.5 MiB overwrite did not read back intact")
    snap.close()
    if engine.durable:
        engine = await ctx.reopen(engine)
        expect(await engine.get(b"big/1") == big2 and await engine.get(b"big/3") == big3, "1.5 MiB values changed across reopen")
        return "also across reopen"
    return "in memory"
