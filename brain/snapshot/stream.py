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
        while True:
            pairs = await snap.scan(start, None, limit=page)
            if pairs:
                yield await asyncio.to_thread(encoder.records, pairs)
            if len(pairs) < page:
                break
            start = pairs[-1][0] + b"\x00"
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
