"""A snapshot of a running store, produced as a stream of bytes.

The engine's own snapshot (a consistent read view) is read a page at a time,
and each page is encoded on a worker thread, so a snapshot of any size keeps
the event loop free and holds at most a page or two in memory; the caller's
await on sending each chunk gives the back-pressure.
"""
from __future__ import annotations

import asyncio
import datetime
from typing import AsyncIterator

from brain.snapshot.format import SnapshotEncoder, SnapshotMeta
from engines.base import Engine

PAGE = 4096
# A page's records are held whole while encoded: pages are sized from the
# bytes per record seen so far to hold about this many bytes, starting small
# since nothing is known of the first
PAGE_BYTES = 8 << 20
FIRST_PAGE = 64


async def snapshot_bytes(engine: Engine, server_version: str, meta_out: list[SnapshotMeta] | None = None,
                         page: int = PAGE) -> AsyncIterator[bytes]:
    """The snapshot file's bytes, in pieces (one per engine page). meta_out,
    when given, receives the metadata once the last piece is out."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    encoder = SnapshotEncoder(server_version, created)
    snap = engine.snapshot()
    try:
        yield encoder.header()
        start = b""
        limit = min(page, FIRST_PAGE)
        while True:
            pairs = await snap.scan(start, None, limit=limit)
            if pairs:
                before = encoder.meta.record_bytes
                yield await asyncio.to_thread(encoder.records, pairs)
                size = encoder.meta.record_bytes - before
            if len(pairs) < limit:
                break
            start = pairs[-1][0] + b"\x00"
            # the next page sized by this one's bytes per record
            limit = max(1, min(page, PAGE_BYTES * len(pairs) // max(size, 1)))
        yield encoder.finish()
    finally:
        snap.close()
    if meta_out is not None:
        meta_out.append(encoder.meta)


async def chunked(pieces: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """pieces cut into chunks of at most size bytes (the gRPC messages)."""
    async for piece in pieces:
        view = memoryview(piece)
        for i in range(0, len(view), size):
            yield bytes(view[i : i + size])
