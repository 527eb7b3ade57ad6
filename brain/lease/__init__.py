"""Leases: TTL-bound groups of keys that the server deletes when they expire.

`Lessor` is the whole of it for the rest of brain: the gRPC Lease service
calls it, and the MVCC store asks it (inside the writer) whether a lease a
Put names is alive.
"""
from __future__ import annotations

from brain.lease.lease import MAX_TTL, MIN_TTL, Lease
from brain.lease.lessor import Lessor

__all__ = ["Lease", "Lessor", "MAX_TTL", "MIN_TTL"]
