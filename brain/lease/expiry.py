"""When leases are due: a heap of (deadline, lease id).

A renewal pushes a new entry rather than moving the old one; entries whose
lease has gone or been renewed are dropped when they surface (the caller
checks the lease's own expiry). The heap is rebuilt when such stale entries
outnumber the live leases, so frequent keep-alives cannot grow it without
bound.
"""
from __future__ import annotations

import heapq
from typing import Iterable


class ExpiryQueue:
    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []

    def push(self, lease_id: int, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, lease_id))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int) -> list[int]:
        """Ids of entries due at now, earliest first, at most limit."""
        heap = self._heap
        out: list[int] = []
        while heap and heap[0][0] <= now and len(out) < limit:
            out.append(heapq.heappop(heap)[1])
        return out

    def __len__(self) -> int:
        return len(self._heap)

    def rebuild(self, entries: Iterable[tuple[float, int]]) -> None:
        self._heap = list(entries)
        heapq.heapify(self._heap)
