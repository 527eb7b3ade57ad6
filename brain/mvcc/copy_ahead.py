"""Copies of replaced versions, written to the engine ahead of their batch.

A write that replaces or deletes a key's live version moves that version
from the index into its history record (records.py). When the version is
already committed, the copy reads exactly as the LIVE marker it overwrites:
the version never changes, and the index holds the same bytes until the
batch lands. So the copy may go to the engine before its batch, in writes of
its own, and it is harmless whether the batch lands or not (a crash between
the two included). A batch of very many such changes (a DeleteRange or lease
revoke of a large range) thus hands the engine most of its bytes while it is
still being applied and encoded, and its own atomic write is the smaller
part.

Only where this process is the engine's one writer: on an engine several
brain processes share, another one may have compacted the version away, and
a copy written late would bring it back.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from engines.base import WriteBatch

log = logging.getLogger(__name__)

Op = tuple[bytes, bytes | None]

# Copies per engine write: more than the LevelDB engine applies inline
# (its INLINE_MAX_OPS), so each write is applied on its write thread.
CHUNK = 32768
# A DeleteRange of fewer keys copies nothing ahead: its batch's write is
# small enough as it is.
MIN_KEYS = 4096


@dataclass(slots=True)
class CopyAhead:
    """The copies of one batch written ahead of it. Each copy goes into
    `buffer` (records.encode_changes, or a DeleteRange as it deletes);
    `send_full` hands the buffer to the engine once it holds CHUNK copies."""

    write: Callable[[WriteBatch], Awaitable[None]]
    # versions at or below this revision are committed (durable)
    committed: int
    buffer: list[Op] = field(default_factory=list)
    # one per chunk sent: the copies whose write failed (none once it landed)
    _writes: list[asyncio.Future[list[Op]]] = field(default_factory=list)

    @property
    def started(self) -> bool:
        """Whether any copy was taken: the batch must then wait for finish()."""
        return bool(self.buffer or self._writes)

    def send_full(self) -> None:
        if len(self.buffer) >= CHUNK:
            self._send()

    def _send(self) -> None:
        chunk, self.buffer = self.buffer, []
        self._writes.append(asyncio.ensure_future(self._write(WriteBatch(chunk))))

    async def _write(self, chunk: WriteBatch) -> list[Op]:
        # a chunk that landed is let go at once; only a failed one is kept,
        # for the batch to carry (and one the batch never waits for, when
        # it fails before it is sealed, ends here too)
        try:
            await self.write(chunk)
        except Exception as e:
            log.warning("writing %d copies ahead of their batch failed (%s); the batch carries them", len(chunk), e)
            return chunk.ops
        return []

    async def finish(self) -> list[Op]:
        """Send what is buffered and wait for every write. Returns the copies
        whose write failed: they must go into the batch."""
        if self.buffer:
            self._send()
        writes, self._writes = self._writes, []
        failed: list[Op] = []
        for fut in writes:
            failed += await fut
        return failed
