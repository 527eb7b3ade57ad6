"""The part of tikv-client's transaction API that the TiKV engine uses.

The engine is written against `tikv_client.asynchronous.TransactionClient`
(tikv-client 0.0.4: PyO3 bindings over the Rust client). Its calls return
asyncio awaitables that a tokio runtime on the extension's own threads
completes, so awaiting them never blocks the event loop and no call needs a
thread of ours. A client is not tied to the event loop it was connected on.

The shapes below are that API exactly (as far as the engine uses it), written
as Protocols so the engine can be handed either the real client or a test
double with the same shape. Notes on the real client that the engine relies on:
- errors are plain `Exception`s whose text is the Rust client's error
  message (engines.tikv.errors reads it);
- `snapshot()` makes no request: a read-only view at a timestamp;
- `Snapshot.batch_get`/`scan` return (key, value) pairs; batch_get returns
  only the keys found, in no promised order; scan returns at most `limit`
  pairs in key order, and nothing when limit is 0;
- a Transaction that is neither committed nor rolled back makes the Rust
  client panic when it is freed, so every begun transaction ends in one of
  the two;
- `commit()` of the asynchronous wrapper returns None (not the commit
  timestamp).
"""
from __future__ import annotations

from typing import Protocol, Sequence

Pair = tuple[bytes, bytes]


class ClientSnapshot(Protocol):
    async def get(self, key: bytes) -> bytes | None: ...

    async def batch_get(self, keys: Sequence[bytes]) -> list[Pair]: ...

    async def scan(
        self, start: bytes, end: bytes | None, limit: int, include_start: bool = True, include_end: bool = False
    ) -> list[Pair]: ...

    async def scan_keys(
        self, start: bytes, end: bytes | None, limit: int, include_start: bool = True, include_end: bool = False
    ) -> list[bytes]: ...


class ClientTransaction(Protocol):
    async def batch_get(self, keys: Sequence[bytes]) -> list[Pair]: ...

    async def lock_keys(self, keys: Sequence[bytes]) -> None: ...

    async def put(self, key: bytes, value: bytes) -> None: ...

    async def delete(self, key: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class TransactionClient(Protocol):
    async def begin(self, pessimistic: bool = False) -> ClientTransaction: ...

    async def current_timestamp(self) -> int: ...

    def snapshot(self, timestamp: int, pessimistic: bool) -> ClientSnapshot: ...


async def connect_real(pd_endpoints: list[str]) -> TransactionClient:
    """Connect tikv-client's asynchronous TransactionClient to PD."""
    # imported here: the tikv-client package is an optional extra ('brain[tikv]')
    try:
        from tikv_client import asynchronous
    except ImportError as e:
        raise ImportError(f"the tikv engine needs the tikv-client package (pip install 'brain[tikv]'): {e}") from None
    return await asynchronous.TransactionClient.connect(list(pd_endpoints))
