"""The fake PD's timestamp oracle.

A TiKV timestamp is physical milliseconds since the Unix epoch shifted left
by 18 bits, plus a logical counter within the millisecond. Lock TTLs are
measured against the physical part, so the fake hands out real wall-clock
time, as PD does: a lock left by a killed client then expires after its TTL
in real time. Timestamps never go backwards, across restarts too: like PD,
the oracle saves an upper bound ahead of what it hands out (a window of a
few seconds, so it writes rarely) and starts above the saved bound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

LOGICAL_BITS = 18
MAX_LOGICAL = 1 << LOGICAL_BITS
SAVE_WINDOW_MS = 3000


def compose(physical: int, logical: int) -> int:
    return (physical << LOGICAL_BITS) | logical


def physical_of(ts: int) -> int:
    return ts >> LOGICAL_BITS


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Oracle:
    """Hands out batches of strictly increasing timestamps.

    saved_limit: the bound persisted by the previous run (0 for none);
    save_limit: persists a new bound; called before any timestamp at or
    above the old bound is handed out."""

    saved_limit: int
    save_limit: Callable[[int], None]
    clock: Callable[[], int] = wall_ms
    physical: int = field(init=False)
    logical: int = field(init=False, default=0)
    limit: int = field(init=False, default=0)  # the bound saved last

    def __post_init__(self) -> None:
        # above everything a previous run may have handed out
        self.physical = max(self.clock(), self.saved_limit + 1)
        self.limit = self.saved_limit

    def next_batch(self, count: int) -> tuple[int, int]:
        """Reserve count timestamps; (physical, logical) of the last one, as
        PD's TsoResponse carries it (the client counts back from it)."""
        if not 0 < count < MAX_LOGICAL:
            raise ValueError(f"cannot hand out {count} timestamps at once")
        now = self.clock()
        if now > self.physical:
            self.physical, self.logical = now, 0
        if self.logical + count >= MAX_LOGICAL:
            # the millisecond is used up: borrow the next one, as PD does
            self.physical, self.logical = self.physical + 1, 0
        if self.physical >= self.limit:
            self.limit = self.physical + SAVE_WINDOW_MS
            self.save_limit(self.limit)
        self.logical += count
        return self.physical, self.logical
