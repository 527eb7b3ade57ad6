"""The MVCC writer's queue (writer.py)."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Inbox:
    """The writer's queue: a deque and one waiter. asyncio.Queue does the
    same with more bookkeeping per item (and looks up the running loop,
    a getpid system call, on every wait)."""

    __slots__ = ("items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque = deque()
        self._loop = loop
        self._waiter: asyncio.Future | None = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        self.wake()

    def wake(self) -> None:
        """Let a wait() return, items or not."""
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Until there are items or wake() is called."""
        if not self.items:
            w = self._waiter = self._loop.create_future()
            await w
