"""Durable engines: contents survive a reopen, batches are atomic and
acknowledged writes survive SIGKILL, and a data directory has one owner."""
from __future__ import annotations

import json

from engines.base import EngineLockedError, prefix_end
from engines.conformance import child as layout
from engines.conformance.checks.data import batch
from engines.conformance.harness import CheckContext, CheckSkipped, expect, expect_eq, short
from engines.conformance.processes import run_once, stream_then_kill


async def check_reopen(ctx: CheckContext) -> None:
    engine = await ctx.open()
    ctx.require_durable(engine)
    await engine.write(batch([(b"synced", b"1"), (b"gone", b"x")]))
    await engine.write(batch([(b"unsynced", b"2"), (b"gone", None)]), sync=False)
    await engine.commit_if([(b"synced", b"1")], batch([(b"cas", b"3")]))
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
