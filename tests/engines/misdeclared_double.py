"""A test double: an engine that declares one feature it does not honour.

It stores its data in a MemoryEngine of its own and declares `claim`; what
goes with the claim is broken on purpose, so that the conformance check of
that feature has something to catch:
- shared: each open has data of its own, so two opens share nothing;
- ordered_writes: every write waits a random little while before it applies
  (with the flaw "late_snapshot": writes apply in order, but
  commit_snapshot() takes its snapshot a turn of the event loop late, after
  the calls queued behind it);
- inline_sync_hint: syncs_inline() says True, yet every write suspends;
- disk_size: disk_size() and bytes_written stay 0 whatever is written;
- compact_range: there is no compact_range();
- latency_histograms: the histograms are there and never count anything;
- sync_counters: the counters are there and never count anything.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Sequence

from engines.base import Engine, WriteBatch
from engines.conformance import EngineTarget
from engines.features import EngineFeatures
from engines.memory import MemoryEngine, MemorySnapshot
from engines.timings import DurationHistogram


class MisdeclaredEngineDouble:
    name = "misdeclared"
    durable = False

    def __init__(self, claim: str | None, flaw: str | None = None) -> None:
        self.features = EngineFeatures(**({claim: True} if claim else {}))
        self._claim = claim
        self._flaw = flaw
        self._data = MemoryEngine()
        self._rng = random.Random(9)
        self.bytes_written = 0
        self.fsync_durations = DurationHistogram()
        self.commit_durations = DurationHistogram()
        self.sync_seconds = 0.0
        self.synced_inline = 0
        self.synced_on_thread = 0

    def syncs_inline(self) -> bool:
        return True

    def disk_size(self) -> int:
        return 0

    async def _before_write(self) -> None:
        if self._claim == "ordered_writes" and self._flaw is None:
            await asyncio.sleep(self._rng.uniform(0, 0.003))
        elif self._claim == "inline_sync_hint":
            await asyncio.sleep(0)

    async def get(self, key: bytes) -> bytes | None:
        return await self._data.get(key)

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self._data.batch_get(keys)

    async def scan(self, start: bytes, end: bytes | None, limit: int = 0, reverse: bool = False, keys_only: bool = False) -> list[tuple[bytes, bytes]]:
        return await self._data.scan(start, end, limit, reverse, keys_only)

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        await self._before_write()
        await self._data.write(batch, sync)

    async def commit_if(self, expect: Sequence[tuple[bytes, bytes | None]], batch: WriteBatch, sync: bool = True) -> None:
        await self._before_write()
        await self._data.commit_if(expect, batch, sync)

    async def commit_snapshot(self, expect: Sequence[tuple[bytes, bytes | None]], batch: WriteBatch, sync: bool = True) -> MemorySnapshot:
        await self.commit_if(expect, batch, sync)
        if self._flaw == "late_snapshot":
            await asyncio.sleep(0)
        return self._data.snapshot()

    def snapshot(self) -> MemorySnapshot:
        return self._data.snapshot()

    async def close(self) -> None:
        await self._data.close()


@dataclass(frozen=True)
class MisdeclaredTarget(EngineTarget):
    """Opens a MisdeclaredEngineDouble claiming options["claim"] (None:
    nothing), with options["flaw"] if given."""

    def open(self, slot: str) -> Engine:
        return MisdeclaredEngineDouble(self.options.get("claim"), self.options.get("flaw"))
