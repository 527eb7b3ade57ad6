"""Giving the memory of a large response back to the system.

A whole-range list builds a response as large as the data it lists. Python
frees those buffers once the response is sent, but glibc's allocator keeps
the freed pages in its heaps (they are fragmented by the small objects
allocated meanwhile), so the process's RSS would stay at its peak. After a
large response, `malloc_trim` runs on a thread every few seconds for a
while, so the memory goes back once the client has read it all.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Callable

log = logging.getLogger(__name__)

LARGE_RESPONSE_BYTES = 64 << 20
# trims run this often until this long after the last large response
# (its memory is freed only once a client has read all of it)
TRIM_EVERY_S = 2.0
TRIM_FOR_S = 30.0


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
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0

    def after_response(self, size: int) -> None:
        """A response of size bytes is on its way out."""
        if size < LARGE_RESPONSE_BYTES or self._trim is None:
            return
        loop = asyncio.get_running_loop()
        self._until = loop.time() + TRIM_FOR_S
        if self._timer is None:
            self._timer = loop.call_later(TRIM_EVERY_S, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._run)
        self._timer = loop.call_later(TRIM_EVERY_S, self._tick) if loop.time() < self._until else None

    def _run(self) -> None:
        assert self._trim is not None
        self._trim(0)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
