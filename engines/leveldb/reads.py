"""LevelDB reads that may be long: scans, paged from the event loop to a read
thread, and snapshots."""
from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Protocol, Sequence

from engines.base import EngineClosedError, check_key
from engines.validate import check_keys, check_scan

# Pairs a scan reads on the caller's thread before it moves to a read
# thread (see scan): a short range reads on the loop; the rest of a list
# page (kube-apiserver's are 500 pairs) on a thread, where plyvel steps the
# iterator without the GIL, so requests of other clients are served between
# its steps rather than after the page.
INLINE_SCAN_ITEMS = 128
# Scans of at most this many pairs keep the blocks they read in LevelDB's
# block cache; longer ones (list pages, whole ranges) read past it, as
# LevelDB advises for bulk scans: a list of every key would otherwise fill
# the cache with blocks read once and evict the ones point reads use.
CACHED_SCAN_ITEMS = 100


class ReadThreads(Protocol):
    """The engine as its scans and snapshots see it."""

    @property
    def closed(self) -> bool: ...

    async def read_on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on one of the engine's read threads."""
        ...


async def scan(engine: ReadThreads, reader: Any, start: bytes, end: bytes | None, limit: int, reverse: bool, keys_only: bool) -> list[tuple[bytes, bytes]]:
    """Scan a plyvel DB or snapshot (both have the same iterator API).

    The first INLINE_SCAN_ITEMS pairs are read on the caller's thread;
    a scan with more to read finishes on the engine's read threads, so a
    long scan never holds the event loop: plyvel steps its iterator without
    the GIL, and the loop runs between steps."""
    fill_cache = 0 < limit <= CACHED_SCAN_ITEMS
    if reverse:
        return _scan_reverse(reader, start, end, limit, keys_only, fill_cache)
    it = reader.iterator(start=start, stop=end, include_value=not keys_only, fill_cache=fill_cache)
    handed_off = False
    try:
        first = limit if 0 < limit <= INLINE_SCAN_ITEMS else INLINE_SCAN_ITEMS
        found = list(islice(it, first))
        if keys_only:
            found = [(k, b"") for k in found]
        if len(found) == first and first != limit:
            rest = limit - first if limit else None
            handed_off = True
            found += await engine.read_on_thread(_drain, it, rest, keys_only)
    finally:
        if not handed_off:
            it.close()
    return found


def _drain(it: Any, limit: int | None, keys_only: bool) -> list:
    """The rest of a scan, on a read thread; closes the iterator there, so a
    cancelled caller never closes it under the thread."""
    try:
        if keys_only:
            return [(k, b"") for k in islice(it, limit)]
        return list(islice(it, limit))
    finally:
        it.close()


def _scan_reverse(reader: Any, start: bytes, end: bytes | None, limit: int, keys_only: bool, fill_cache: bool) -> list[tuple[bytes, bytes]]:
    # not plyvel's iterator(reverse=True): with start and stop set it yields
    # nothing when the only key in range is start itself (plyvel 1.5.1)
    it = reader.raw_iterator(fill_cache=fill_cache)
    out: list[tuple[bytes, bytes]] = []
    try:
        if end is None:
            it.seek_to_last()
        else:
            it.seek(end)  # the first key >= end, or invalid past the last key
            if it.valid():
                it.prev()
            else:
                it.seek_to_last()
        while it.valid():
            key = it.key()
            if key < start:
                break
            out.append((key, b"" if keys_only else it.value()))
            if len(out) == limit:
                break
            it.prev()
    finally:
        it.close()
    return out


class LevelDBSnapshot:
    """A plyvel snapshot; released by close() or when garbage collected."""

    __slots__ = ("_engine", "_snap", "__weakref__")

    def __init__(self, engine: ReadThreads, snap: Any) -> None:
        self._engine = engine
        self._snap = snap

    def _reader(self) -> Any:
        if self._engine.closed:
            raise EngineClosedError("leveldb snapshot used after its engine was closed")
        if self._snap is None:
            raise EngineClosedError("leveldb snapshot used after close()")
        return self._snap

    async def get(self, key: bytes) -> bytes | None:
        key = check_key(key)
        try:
            return self._reader().get(key)
        except RuntimeError as e:  # plyvel: closed by another thread meanwhile
            raise EngineClosedError(f"leveldb snapshot: {e}") from None

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        ks = check_keys(keys)
        try:
            get = self._reader().get
            return [get(k) for k in ks]
        except RuntimeError as e:
            raise EngineClosedError(f"leveldb snapshot: {e}") from None

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        s, e, n = check_scan(start, end, limit)
        try:
            return await scan(self._engine, self._reader(), s, e, n, reverse, keys_only)
        except RuntimeError as err:
            raise EngineClosedError(f"leveldb snapshot: {err}") from None

    def close(self) -> None:
        snap, self._snap = self._snap, None
        if snap is not None:
            snap.close()  # plyvel makes this a no-op once the DB is closed
