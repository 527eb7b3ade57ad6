"""One granted lease and etcd's TTL limits."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

# etcd refuses TTLs above this (lease.MaxLeaseTTL).
MAX_TTL = 9_000_000_000

# etcd raises shorter TTLs to 1.5 election timeouts, rounded up to whole
# seconds: 2 s with its default 1000 ms election timeout. brain has no
# election, so it uses etcd's default outcome.
MIN_TTL = 2


@dataclass(slots=True, eq=False)
class Lease:
    id: int
    ttl: int  # the granted TTL, seconds (after the minimum was applied)
    expiry: float  # on the lessor's monotonic clock
    # set once the lease is gone (revoked or expired and its keys deleted), so
    # that a keep-alive racing an expiry can wait for the outcome, as in etcd
    revoked: asyncio.Event = field(default_factory=asyncio.Event)

    def remaining(self, now: float) -> float:
        return self.expiry - now

    def expired(self, now: float) -> bool:
        return self.expiry <= now
