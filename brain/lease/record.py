"""How a lease is kept in the engine: `l<id:8>` -> its granted TTL.

Only the granted TTL is stored, as etcd 3.5 does without checkpointing: a
restarted server gives every lease its full TTL again (etcd's Promote).
"""
from __future__ import annotations

import struct

from brain.mvcc import records as K
from engines.base import Engine, Snapshot

_RECORD = struct.Struct(">q")
_ID = struct.Struct(">q")


def encode(ttl: int) -> bytes:
    return _RECORD.pack(ttl)


def decode_id(engine_key: bytes) -> int:
    # lease_key stores the id as unsigned 8 bytes; ids are int64 on the wire
    return _ID.unpack(engine_key[len(K.LEASE) :])[0]


def decode_ttl(raw: bytes) -> int:
    return _RECORD.unpack(raw)[0]


async def load_all(source: Engine | Snapshot, page: int = 1024) -> dict[int, int]:
    """Every stored lease: id -> granted TTL."""
    out: dict[int, int] = {}
    start = K.LEASE
    while True:
        items = await source.scan(start, K.LEASE_END, limit=page)
        for key, raw in items:
            out[decode_id(key)] = decode_ttl(raw)
        if len(items) < page:
            return out
        start = items[-1][0] + b"\x00"
