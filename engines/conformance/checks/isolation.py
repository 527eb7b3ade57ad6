"""Snapshots see their moment only; closed things refuse use; bad arguments
are refused with nothing written."""
from __future__ import annotations

from engines.base import EngineClosedError
from engines.conformance.checks.data import Reader, batch, model_scan
from engines.conformance.harness import CheckContext, expect, expect_eq, expect_raises


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
    await engine.write(batch(v1.items()))
    s1 = engine.snapshot()
    await engine.write(batch([(b"a", b"10"), (b"b", None), (b"d", b"4")]))
    v2 = {b"a": b"10", b"c": b"3", b"d": b"4"}
    s2 = engine.snapshot()
    for i in range(200):  # many later versions: old ones must stay readable
        await engine.write(batch([(b"a", b"a%d" % i), (b"m%d" % (i % 10), b"%d" % i)]), sync=i % 50 == 0)
    await engine.write(batch([(b"c", None), (b"b", b"20"), (b"e", b"")]))
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
    await engine.write(batch([(b"a", b"x")]))
    await _expect_view(s3, latest, "snapshot 3 after snapshot 2 was dropped")
    s3.close()
    s3.close()  # closing twice is harmless


async def check_use_after_close(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(batch([(b"a", b"1")]))
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
        ("write", lambda: engine.write(batch([(b"b", b"2")]))),
        ("unsynced write", lambda: engine.write(batch([(b"b", b"2")]), sync=False)),
        ("commit_if", lambda: engine.commit_if([], batch([(b"b", b"2")]))),
        ("snapshot", engine.snapshot),
        ("snapshot get", lambda: snap.get(b"a")),
        ("snapshot batch_get", lambda: snap.batch_get([b"a"])),
        ("snapshot scan", lambda: snap.scan(b"", None)),
    ):
        await expect_raises(EngineClosedError, call, f"{what} after engine close()")
    snap.close()  # closing a snapshot of a closed engine is harmless


async def check_bad_arguments(ctx: CheckContext) -> None:
    engine = await ctx.open()
    await engine.write(batch([(b"a", b"1")]))
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
        ("str key", batch([(b"ok", b"1"), ("bad", b"2")])),
        ("int key", batch([(b"ok", b"1"), (7, b"2")])),
        ("str value", batch([(b"ok", b"1"), (b"bad", "2")])),
    ):
        for sync in (True, False):
            await expect_raises(TypeError, lambda: engine.write(wb, sync=sync), f"write with a {what} (sync={sync})")
            expect_eq(await engine.get(b"ok"), None, f"after a rejected write with a {what}: nothing may be written")
    # wrong types on purpose: the engine must refuse them
    await expect_raises(TypeError, lambda: engine.commit_if([("a", b"1")], batch([(b"ok", b"1")])), "commit_if expecting a str key")  # type: ignore[list-item]
    await expect_raises(TypeError, lambda: engine.commit_if([(b"a", "1")], batch([(b"ok", b"1")])), "commit_if expecting a str value")  # type: ignore[list-item]
    await expect_raises(TypeError, lambda: engine.commit_if([(b"a", b"1")], batch([(b"ok", 1)])), "commit_if with an int value")
    expect_eq(await engine.get(b"ok"), None, "after rejected commit_if calls: nothing may be written")
    expect_eq(await engine.get(b"a"), b"1", "the engine still works after bad arguments")
