"""What the checks share: batches from pairs, and the model a scan is held to."""
from __future__ import annotations

from typing import Any

from engines.base import Engine, Snapshot, WriteBatch

Items = list[tuple[bytes, bytes]]
Reader = Engine | Snapshot

MiB = 1 << 20


def batch(items: Any) -> WriteBatch:
    wb = WriteBatch()
    for k, v in items:
        wb.ops.append((k, v))
    return wb


def model_scan(items: Items, start: bytes, end: bytes | None, limit: int = 0, reverse: bool = False, keys_only: bool = False) -> Items:
    """What scan must return, computed from a sorted list of all pairs."""
    out = [(k, b"" if keys_only else v) for k, v in items if k >= start and (end is None or k < end)]
    if reverse:
        out.reverse()
    return out[:limit] if limit else out


async def fill(engine: Engine, items: Items, chunk: int = 64) -> None:
    for i in range(0, len(items), chunk):
        await engine.write(batch(items[i : i + chunk]), sync=False)
