"""The key set: an empty engine record per live key, and one per key
attached to a lease (records.py), written beside the index by every commit.
An open reads them instead of the index, whose records hold every value."""
from __future__ import annotations

import asyncio
import logging

from sortedcontainers import SortedList

from brain.etcdpb import kv_pb2
from brain.mvcc import records as K
from engines.base import Engine, Snapshot, WriteBatch

log = logging.getLogger(__name__)

_parse_kv = kv_pb2.KeyValue.FromString

# live keys per engine write when an older store's key set is written
KEYSET_CHUNK = 4096


async def read_keys(snap: Snapshot) -> tuple[SortedList, int]:
    """The live keys of a snapshot, sorted, and their total size, from the
    engine's key set; sorted on a thread (a long scan is the engine's to
    keep off the event loop)."""
    found = await snap.scan(*K.keyset_range(b"", b""), keys_only=True)
    return await asyncio.to_thread(_sorted_keys, found)


def _sorted_keys(found: list[tuple[bytes, bytes]]) -> tuple[SortedList, int]:
    keys = [K.keyset_user_key(k) for k, _ in found]
    found.clear()
    return SortedList(keys), sum(map(len, keys))


async def ensure_keyset(engine: Engine) -> None:
    """Write the key set and leased-key records of a store written before
    they existed, from its index, once (records.py)."""
    if await engine.get(K.META_KEYSET) is not None:
        return
    snap = engine.snapshot()
    try:
        start, n = K.INDEX, 0
        while True:
            items = await snap.scan(start, K.INDEX_END, limit=KEYSET_CHUNK)
            wb = WriteBatch()
            for k, raw in items:
                key = K.index_user_key(k)
                wb.put(K.keyset_key(key), b"")
                lease = _parse_kv(raw).lease
                if lease:
                    wb.put(K.leased_key(lease, key), b"")
            if items:
                await engine.write(wb)
                n += len(items)
            if len(items) < KEYSET_CHUNK:
                break
            start = items[-1][0] + b"\x00"
        wb = WriteBatch()
        wb.put(K.META_KEYSET, b"1")
        await engine.write(wb)
        if n:
            log.info("wrote the key set of %d live keys", n)
    finally:
        snap.close()
