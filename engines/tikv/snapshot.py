"""A TiKV snapshot: reads at one timestamp of PD's oracle (see engine.py for
how snapshots get their timestamp)."""
from __future__ import annotations

from typing import Protocol, Sequence

from engines.base import EngineClosedError, check_key
from engines.validate import check_keys, check_scan


class ReadsAtTimestamp(Protocol):
    """The engine as its snapshots see it."""

    @property
    def closed(self) -> bool: ...

    async def get_at(self, ts: int, key: bytes) -> bytes | None: ...

    async def batch_get_at(self, ts: int, keys: list[bytes]) -> list[bytes | None]: ...

    async def scan_at(self, ts: int, start: bytes, end: bytes | None, limit: int, reverse: bool, keys_only: bool) -> list[tuple[bytes, bytes]]: ...


class TikvSnapshot:
    """A read view of the engine at one TSO timestamp. Holds nothing on the
    TiKV side, so dropping it without close() costs nothing."""

    __slots__ = ("_engine", "_ts", "_open")

    def __init__(self, engine: ReadsAtTimestamp, ts: int) -> None:
        self._engine = engine
        self._ts = ts
        self._open = True

    @property
    def timestamp(self) -> int:
        return self._ts

    def _check(self) -> ReadsAtTimestamp:
        if self._engine.closed:
            raise EngineClosedError("tikv snapshot used after its engine was closed")
        if not self._open:
            raise EngineClosedError("tikv snapshot used after close()")
        return self._engine

    async def get(self, key: bytes) -> bytes | None:
        key = check_key(key)
        return await self._check().get_at(self._ts, key)

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        ks = check_keys(keys)
        return await self._check().batch_get_at(self._ts, ks)

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        s, e, n = check_scan(start, end, limit)
        return await self._check().scan_at(self._ts, s, e, n, reverse, keys_only)

    def close(self) -> None:
        self._open = False
