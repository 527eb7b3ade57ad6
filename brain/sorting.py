"""Sorting many keys without holding the event loop for the whole sort."""
from __future__ import annotations

import asyncio
from heapq import merge
from itertools import islice
from typing import Iterator

# Keys sorted per turn of the event loop.
SORT_RUN = 8192


async def sorted_in_runs(keys: list[bytes], run: int = 0) -> Iterator[bytes]:
    """keys in ascending order. A list longer than one run is cut into runs,
    each sorted in a turn of its own, and the runs are merged lazily, so the
    caller pays for the merge as it takes keys (and yields to the loop as
    it goes). keys is not changed. run: keys per run (0: SORT_RUN)."""
    run = run or SORT_RUN
    if len(keys) <= run:
        return iter(sorted(keys))
    runs = []
    for i in range(0, len(keys), run):
        if i:
            await asyncio.sleep(0)
        runs.append(sorted(keys[i : i + run]))
    return merge(*runs)


async def take_all(ordered: Iterator[bytes], run: int = 0) -> list[bytes]:
    """Every key of a lazy merge (sorted_in_runs), a run (0: SORT_RUN) per
    turn of the loop."""
    run = run or SORT_RUN
    out: list[bytes] = []
    while True:
        before = len(out)
        out.extend(islice(ordered, run))
        if len(out) - before < run:
            return out
        await asyncio.sleep(0)
