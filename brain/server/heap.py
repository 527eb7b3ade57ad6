"""Giving the memory of a large response back to the system.

A whole-range list builds a response as large as the data it lists. Python
frees those buffers once the response is sent, but glibc's allocator keeps
the freed pages in its heaps (they are fragmented by the small objects
allocated meanwhile), so the process's RSS would stay at its peak. After a
large response, `malloc_trim` runs on a thread, once the response has had
time to be sent and again later for a slow client.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Callable

log = logging.getLogger(__name__)

LARGE_RESPONSE_BYTES = 64 << 20
TRIM_AFTER_S = (1.0, 5.0, 30.0)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class HeapTrimmer:
    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._scheduled: list[asyncio.TimerHandle] = []
        self.trims = 0

    def after_response(self, size: int) -> None:
        """A response of size bytes is on its way out."""
        if size < LARGE_RESPONSE_BYTES or self._trim is None:
            return
        loop = asyncio.get_running_loop()
        for h in self._scheduled:
            h.cancel()
        self._scheduled = [loop.call_later(d, self._start) for d in TRIM_AFTER_S]

    def _start(self) -> None:
        asyncio.get_running_loop().run_in_executor(None, self._run)

    def _run(self) -> None:
        assert self._trim is not None
        self._trim(0)
        self.trims += 1

    def close(self) -> None:
        for h in self._scheduled:
            h.cancel()
        self._scheduled = []
