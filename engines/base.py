"""The contract every storage engine implements.

brain keeps all of its state in an ordered key-value engine. The MVCC layer
(brain/mvcc) depends only on what is defined here, so an engine author
implements `Engine` and `Snapshot`, runs `brain engine-check`, and is done.

Why this shape:
- Reads go through a `Snapshot` so the MVCC layer can pair a consistent view
  of the engine with the revision it corresponds to (the committed watermark).
- Writes are whole batches: one batch is one atomic, durable unit, which is
  what group commit needs (one fsync serves many client requests).
- `commit_if` is the compare-and-swap that several brain processes sharing
  one remote engine (TiKV) need to agree on who writes next.
- A remote engine can time out after its write took effect; that case is
  `CommitUnknownError`, never silently folded into success or failure.
- What an engine does beyond this contract it declares (`features`,
  engines/features.py), and the conformance suite checks the declaration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, cast, runtime_checkable

from engines.features import DeclaresFeatures, EngineFeatures


class EngineError(Exception):
    """Base of every engine error; engine-neutral."""


class EngineClosedError(EngineError):
    """The engine or snapshot was used after close()."""


class EngineLockedError(EngineError):
    """The data directory is held by another process."""


class ConflictError(EngineError):
    """A conditional commit found a key changed since it was read; nothing was written."""


class CommitUnknownError(EngineError):
    """The commit may or may not have been applied (e.g. a timeout after sending it)."""


class EngineUnavailableError(EngineError):
    """The engine cannot be reached (remote engines)."""


class EngineFullError(EngineError):
    """A write failed for lack of disk space; nothing of it was written, and
    the same write may succeed once space is freed."""


@dataclass(slots=True)
class WriteBatch:
    """An ordered list of puts (value is bytes) and deletes (value is None).

    Applied atomically and in order: a later op on the same key wins.
    """

    ops: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))

    def __len__(self) -> int:
        return len(self.ops)


@runtime_checkable
class Snapshot(Protocol):
    """A consistent, read-only view of the engine at one point in time."""

    async def get(self, key: bytes) -> bytes | None: ...

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        """Pairs with start <= key < end (end None: no upper bound), ascending
        (descending when reverse). limit 0 means no limit. With keys_only the
        values are returned as b""."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """An ordered, byte-keyed, transactional key-value store.

    `features` declares what the engine does beyond this contract (shared
    data, ordered writes, a size on disk, ...: engines/features.py); brain
    relies on a feature only when the engine declares it."""

    name: str
    durable: bool
    features: EngineFeatures

    async def get(self, key: bytes) -> bytes | None: ...

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]: ...

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        """Apply the batch atomically; durable on return when sync is true."""
        ...

    async def commit_if(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> None:
        """Apply the batch only if every key in expect still holds the given
        value (None: absent). Raises ConflictError, writing nothing, otherwise."""
        ...

    def snapshot(self) -> Snapshot: ...

    async def close(self) -> None: ...


class OrderedWrites(Protocol):
    """What an engine declaring `ordered_writes` provides (engines/features.py)."""

    async def commit_snapshot(
        self, expect: Sequence[tuple[bytes, bytes | None]], batch: WriteBatch, sync: bool = True,
    ) -> Snapshot:
        """commit_if (a plain write when expect is empty), returning a
        snapshot taken after the batch took effect and before any write
        called after it did."""
        ...


def ordered(engine: DeclaresFeatures) -> OrderedWrites | None:
    """The engine as OrderedWrites, when it declares the feature (the
    conformance suite checks that it does what it declares)."""
    if not engine.features.ordered_writes:
        return None
    if not hasattr(engine, "commit_snapshot"):
        raise TypeError(f"{type(engine).__name__} declares ordered_writes but has no commit_snapshot()")
    return cast(OrderedWrites, engine)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with prefix; None when
    there is none (prefix empty or all 0xff): the range then has no end."""
    b = bytearray(prefix)
    while b:
        if b[-1] != 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return None


def check_key(key: object) -> bytes:
    """Engines share one rule for argument errors: keys are bytes."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"engine keys must be bytes, not {type(key).__name__}")
    return bytes(key)


def check_range(start: object, end: object) -> None:
    check_key(start)
    if end is not None:
        check_key(end)
        if end < start:  # type: ignore[operator]
            raise ValueError(f"inverted range: end {end!r} < start {start!r}")
