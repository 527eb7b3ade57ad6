"""Scans and batch gets in pages.

One tikv-client scan sends the limit to every region in the range and
merges the answers, so an unbounded scan, or a large limit over many regions,
would pull the whole range into one response per region. Scans therefore go
page by page, each page starting after the last key of the one before.

A page whose response exceeds the client's message limit (large values) is
asked for again with half as many keys, down to one.

tikv-client 0.0.4 has no reverse scan: a reverse scan reads its range
forward, keeping only the last `limit` pairs. That costs a read of the whole
range, which is acceptable for brain's only reverse scans (the versions of
one key below a revision, which compaction keeps short).
"""
from __future__ import annotations

from collections import deque
from typing import AsyncIterator, Awaitable, Callable, Sequence

from engines.base import EngineError
from engines.tikv.errors import ResponseTooLargeError

Pair = tuple[bytes, bytes]
# read(start, include_start, end, limit): at most limit pairs of the stored
# range, in key order; limit is always >= 1
ReadPage = Callable[[bytes, bool, "bytes | None", int], Awaitable[list[Pair]]]
# get(keys): the found (key, value) pairs of keys, in any order
GetMany = Callable[[list[bytes]], Awaitable[list[Pair]]]


async def pages(read: ReadPage, start: bytes, end: bytes | None, limit: int, page_size: int) -> AsyncIterator[list[Pair]]:
    """The pairs of [start, end) page by page, at most limit in all (0: no limit)."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, not {page_size}")
    cursor, include = start, True
    size = page_size
    taken = 0
    while True:
        n = size if not limit else min(size, limit - taken)
        try:
            got = await read(cursor, include, end, n)
        except ResponseTooLargeError:
            if n == 1:
                raise EngineError("tikv: a single value is larger than one client response may carry") from None
            size = max(1, n // 2)
            continue
        if got:
            yield got
            taken += len(got)
        if len(got) < n or (limit and taken >= limit):
            return
        cursor, include = got[-1][0], False


async def scan(read: ReadPage, start: bytes, end: bytes | None, limit: int, reverse: bool, page_size: int) -> list[Pair]:
    if not reverse:
        out: list[Pair] = []
        async for page in pages(read, start, end, limit, page_size):
            out.extend(page)
        return out
    window: deque[Pair] = deque(maxlen=limit or None)
    async for page in pages(read, start, end, 0, page_size):
        window.extend(page)
    window.reverse()
    return list(window)


async def batch_get(get: GetMany, keys: Sequence[bytes], page_size: int) -> dict[bytes, bytes]:
    """The found values of keys (duplicates asked once), in pages of page_size keys."""
    todo = list(dict.fromkeys(keys))
    found: dict[bytes, bytes] = {}
    size = page_size
    i = 0
    while i < len(todo):
        chunk = todo[i : i + size]
        try:
            pairs = await get(chunk)
        except ResponseTooLargeError:
            if len(chunk) == 1:
                raise EngineError("tikv: a single value is larger than one client response may carry") from None
            size = max(1, len(chunk) // 2)
            continue
        found.update(pairs)
        i += len(chunk)
    return found
