"""A micro-benchmark of an engine, next to raw plyvel as the baseline.

Batched durable writes are the number that matters for brain: the MVCC layer
commits each group of client requests as one synced batch, so the engine's
synced-batch rate bounds brain's write throughput. Raw plyvel
(`WriteBatch(sync=True)` on a DB in the same filesystem) is what LevelDB can do
with no engine around it; the engine should stay within 2x of it.

Every measurement is a closed loop (one operation in flight, as the MVCC
writer issues them). The engine and raw plyvel are measured alternately,
several rounds each, and the median is kept: disks drift, and alternating
keeps the drift from favouring one side.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import plyvel

from engines.base import Engine, WriteBatch

BATCH_SIZES = (1, 10, 100)
SCAN_KEYS = 10_000
# the target: engine batched durable writes at >= 1/2 of raw plyvel
RATIO_TARGET = 0.5


@dataclass
class Measurement:
    """ops operations (batches, gets, scans) moving keys keys in seconds."""

    name: str
    ops: int
    keys: int
    seconds: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def keys_per_s(self) -> float:
        return self.keys / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ops_per_s": round(self.ops_per_s, 1), "keys_per_s": round(self.keys_per_s, 1)}


@dataclass
class BenchResult:
    engine: str
    value_size: int
    seconds: float
    rounds: int
    durable: bool = True
    engine_results: dict[str, Measurement] = field(default_factory=dict)
    raw_plyvel: dict[int, Measurement] = field(default_factory=dict)
    # engine / raw plyvel synced batches per second, per round: each round's
    # two runs are adjacent in time, so their ratio is immune to slow drift
    round_ratios: dict[int, list[float]] = field(default_factory=dict)

    def ratio(self, batch_size: int) -> float:
        """Median engine / raw plyvel synced-batch rate (1.0: as fast)."""
        return statistics.median(self.round_ratios[batch_size])

    @property
    def within_target(self) -> bool:
        return all(self.ratio(n) >= RATIO_TARGET for n in self.raw_plyvel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "durable": self.durable,
            "value_size": self.value_size,
            "seconds_per_measurement": self.seconds,
            "rounds": self.rounds,
            "results": {k: m.to_dict() for k, m in self.engine_results.items()},
            "raw_plyvel": {f"durable_batch_{n}": m.to_dict() for n, m in self.raw_plyvel.items()},
            "ratio_engine_to_raw": {str(n): round(self.ratio(n), 3) for n in self.raw_plyvel},
            "ratio_engine_to_raw_per_round": {str(n): [round(r, 3) for r in rs] for n, rs in self.round_ratios.items()},
            "ratio_target": RATIO_TARGET,
            "within_target": self.within_target if self.durable else None,
        }


def _median(runs: list[Measurement]) -> Measurement:
    """The run with the median rate (the runs may differ in length)."""
    return sorted(runs, key=lambda m: m.ops_per_s)[len(runs) // 2]


class _Keys:
    """Fresh, increasing keys: every write inserts, as brain's revisions do."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        return self.prefix + b"%012d" % self.n


async def _timed_async(name: str, seconds: float, keys_per_op: int, op: Callable[[], Any]) -> Measurement:
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await op()
        ops += 1
        now = time.perf_counter()
        if now >= deadline:
            return Measurement(name, ops, ops * keys_per_op, now - start)


def _timed_sync(name: str, seconds: float, keys_per_op: int, op: Callable[[], Any]) -> Measurement:
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        op()
        ops += 1
        now = time.perf_counter()
        if now >= deadline:
            return Measurement(name, ops, ops * keys_per_op, now - start)


async def _engine_writes(engine: Engine, keys: _Keys, value: bytes, size: int, sync: bool, name: str, seconds: float) -> Measurement:
    async def op() -> None:
        wb = WriteBatch()
        for _ in range(size):
            wb.put(keys.next(), value)
        await engine.write(wb, sync=sync)

    return await _timed_async(name, seconds, size, op)


def _raw_writes(db: Any, keys: _Keys, value: bytes, size: int, seconds: float) -> Measurement:
    def op() -> None:
        wb = db.write_batch(sync=True)
        for _ in range(size):
            wb.put(keys.next(), value)
        wb.write()

    return _timed_sync(f"raw_plyvel_durable_batch_{size}", seconds, size, op)


async def run_bench(
    engine: Engine,
    raw_dir: str,
    *,
    seconds: float = 0.5,
    rounds: int = 5,
    value_size: int = 1024,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchResult:
    """Benchmark engine (opened by the caller, preferably empty) and raw
    plyvel in raw_dir (created; should be on the engine's filesystem)."""
    rng = random.Random(0)
    value = rng.randbytes(value_size)  # incompressible, like real objects after snappy
    out = BenchResult(engine.name, value_size, seconds, rounds, durable=engine.durable)
    ekeys, rkeys = _Keys(b"bench/w/"), _Keys(b"bench/w/")

    progress("durable single writes")
    out.engine_results["durable_single"] = await _engine_writes(engine, ekeys, value, 1, True, "durable_single", seconds)

    os.makedirs(raw_dir, exist_ok=True)
    db = plyvel.DB(raw_dir, create_if_missing=True)
    try:
        engine_runs: dict[int, list[Measurement]] = {n: [] for n in BATCH_SIZES}
        raw_runs: dict[int, list[Measurement]] = {n: [] for n in BATCH_SIZES}
        for r in range(rounds):
            for n in BATCH_SIZES:
                progress(f"durable batches of {n}, round {r + 1}/{rounds}: engine, then raw plyvel")
                e = await _engine_writes(engine, ekeys, value, n, True, f"durable_batch_{n}", seconds)
                raw = _raw_writes(db, rkeys, value, n, seconds)
                engine_runs[n].append(e)
                raw_runs[n].append(raw)
                out.round_ratios.setdefault(n, []).append(e.ops_per_s / raw.ops_per_s)
        for n in BATCH_SIZES:
            out.engine_results[f"durable_batch_{n}"] = _median(engine_runs[n])
            out.raw_plyvel[n] = _median(raw_runs[n])
    finally:
        db.close()

    progress("unsynced writes")
    out.engine_results["unsynced_single"] = await _engine_writes(engine, ekeys, value, 1, False, "unsynced_single", seconds)

    # a known data set for reads: SCAN_KEYS keys under their own prefix
    progress(f"loading {SCAN_KEYS} keys for reads")
    read_keys = [b"bench/r/%08d" % i for i in range(SCAN_KEYS)]
    for i in range(0, SCAN_KEYS, 1000):
        wb = WriteBatch()
        for k in read_keys[i : i + 1000]:
            wb.put(k, value)
        await engine.write(wb, sync=False)

    progress("point gets")

    async def get() -> None:
        await engine.get(rng.choice(read_keys))

    out.engine_results["point_get"] = await _timed_async("point_get", seconds, 1, get)

    progress(f"scans of {SCAN_KEYS} keys")

    async def scan() -> None:
        got = await engine.scan(b"bench/r/", b"bench/r0")
        assert len(got) == SCAN_KEYS, f"scan returned {len(got)} keys"

    out.engine_results["scan_10k"] = await _timed_async("scan_10k", seconds, SCAN_KEYS, scan)

    async def scan_keys() -> None:
        await engine.scan(b"bench/r/", b"bench/r0", keys_only=True)

    out.engine_results["scan_10k_keys_only"] = await _timed_async("scan_10k_keys_only", seconds, SCAN_KEYS, scan_keys)
    return out


def report(result: BenchResult) -> list[str]:
    """The human-readable table."""
    lines = []
    labels = {
        "durable_single": "durable single writes",
        "durable_batch_1": "durable batches of 1",
        "durable_batch_10": "durable batches of 10",
        "durable_batch_100": "durable batches of 100",
        "unsynced_single": "unsynced single writes",
        "point_get": "point gets",
        "scan_10k": f"scans of {SCAN_KEYS} keys",
        "scan_10k_keys_only": f"scans of {SCAN_KEYS} keys, keys only",
    }
    for name, m in result.engine_results.items():
        line = f"  {labels.get(name, name):<36} {m.ops_per_s:>10.0f} ops/s {m.keys_per_s:>11.0f} keys/s"
        if name.startswith("durable_batch_"):
            n = int(name.rsplit("_", 1)[1])
            raw = result.raw_plyvel[n]
            line += f"   raw plyvel {raw.ops_per_s:>8.0f} ops/s   engine/raw {result.ratio(n):.2f}"
        lines.append(line)
    ratios = " / ".join(f"{result.ratio(n):.2f}" for n in result.raw_plyvel)
    sizes = "/".join(str(n) for n in result.raw_plyvel)
    verdict = "met" if result.within_target else "NOT met"
    if not result.durable:
        verdict = f"does not apply: {result.engine} is not durable"
    lines.append(
        f"  engine/raw plyvel durable batch throughput at batch sizes {sizes} (median of per-round ratios): {ratios} "
        f"(target >= {RATIO_TARGET}, i.e. within 2x: {verdict})"
    )
    return lines
