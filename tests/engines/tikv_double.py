"""FakeTikv: a test double of tikv-client's asynchronous transaction API,
over brain's in-memory engine.

It stands in for a TiKV cluster (PD's timestamp oracle and transactional
storage) so that the TiKV engine's own logic can be tested where no TiKV can
run. It is not an engine, lives under tests/, and never ships.

What it reproduces of `tikv_client.asynchronous` (tikv-client 0.0.4):
- TransactionClient: begin(pessimistic=False), current_timestamp(),
  snapshot(timestamp, pessimistic); FakeTikv.connect(pd_endpoints) plays
  TransactionClient.connect.
- Snapshot: get, key_exists, batch_get (only the keys found, in no
  particular order: they come back shuffled), scan and scan_keys (start, end,
  limit, include_start, include_end): at most limit pairs in key order, none
  for limit 0.
- Transaction (optimistic): the same reads at its start timestamp over its
  own writes, lock_keys, put, delete, commit and rollback. A commit checks
  write conflicts as TiKV's prewrite does: a key the transaction writes or
  locks that someone committed after its start fails the commit, and nothing
  is applied. Operations after a commit or rollback fail; a transaction freed
  while still active is counted in `leaked` (the real client panics).
- Errors are plain Exceptions with the Rust client's texts; keys and values
  that are not bytes raise TypeError, as PyO3 does.

Snapshot isolation comes from the memory engine: every timestamp the double
hands out is paired with a memory-engine snapshot taken at that moment, and a
commit is applied under the same lock as it takes its commit timestamp. A
read at timestamp ts therefore sees exactly the commits before ts.

Injected faults (what TiKV does under failure):
- `inject_commit(*faults)`: the next commits, one fault each:
  "conflict" (fails in prewrite: nothing applied), "undetermined-before" /
  "undetermined-after" (the client's "is undetermined" error, before or after
  the write took effect), "hang-before" / "hang-after" (no answer at all: the
  caller's timeout fires; the write did not / did take effect),
  "region-error" (a region error after the client's retries; not applied),
  None (no fault).
- `down`: every request fails as when PD and TiKV cannot be reached.
- `fail_reads(n, locked=False)`: the next n reads fail: a transport error,
  or (locked) a lock the client could not resolve within its backoff.
- `max_response_bytes`: a read whose answer is larger fails as tonic's
  message limit does.
- `before_commit` / `after_commit`: a coroutine function run once by the
  next commit, first thing (before any injected fault) or right after its
  write took effect: to let another client write in between, or to take the
  cluster down at that moment.
"""
from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter, deque
from typing import Awaitable, Callable, Sequence

from engines.base import WriteBatch
from engines.memory import MemoryEngine, MemorySnapshot

Pair = tuple[bytes, bytes]

UNDETERMINED = "Whether the transaction is committed or not is undetermined"
LOCKED = "Failed to resolve lock"
UNAVAILABLE = (
    'gRPC api error: status: Unavailable, message: "error trying to connect: tcp connect error: '
    'Connection refused (os error 111)", details: [], metadata: MetadataMap { headers: {} }'
)
PD_DOWN = "[/root/.cargo/git/checkouts/client-rust-5a1ccd35a54db20f/b12f95e/src/pd/cluster.rs:189]: PD cluster failed to respond"
REGION_ERROR = (
    'Region error: Error { message: "region 2 is missing", not_leader: None, region_not_found: '
    "Some(RegionNotFound { region_id: 2 }), key_not_in_region: None, epoch_not_match: None, server_is_busy: None, "
    "stale_command: None, store_not_match: None, raft_entry_too_large: None }"
)
AFTER_COMMIT = "Cannot read or write data after any attempt to commit or roll back the transaction"
COMMIT_FAULTS = ("conflict", "undetermined-before", "undetermined-after", "hang-before", "hang-after", "region-error", None)

ACTIVE, STARTED_COMMIT, COMMITTED, ROLLED_BACK = "active", "started-commit", "committed", "rolled-back"


def write_conflict(start_ts: int, conflict_ts: int, key: bytes, conflict_commit_ts: int) -> Exception:
    """The text tikv-client 0.0.4 gives a prewrite write conflict (its
    kvproto has no `reason`): conflict_ts is the start_ts of the transaction
    that won, conflict_commit_ts its commit_ts, as TiKV reports them."""
    return Exception(
        "Multiple key errors: [KeyError(KeyError { locked: None, retryable: \"\", abort: \"\", "
        f"conflict: Some(WriteConflict {{ start_ts: {start_ts}, conflict_ts: {conflict_ts}, key: {list(key)}, "
        f"primary: {list(key)}, conflict_commit_ts: {conflict_commit_ts} }}), already_exist: None, "
        "deadlock: None, commit_ts_expired: None, txn_not_found: None, commit_ts_too_large: None, "
        "assertion_failed: None })]"
    )


def too_large(found: int, limit: int) -> Exception:
    return Exception(
        f'gRPC api error: status: OutOfRange, message: "Error, message length too large: found {found} bytes, '
        f'the limit is: {limit} bytes", details: [], metadata: MetadataMap {{ headers: {{}} }}'
    )


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"argument '{what}': Can't extract `{type(value).__name__}` to `Vec`")
    return value


async def _never() -> None:
    await asyncio.Event().wait()


class FakeTikv:
    """The pretend cluster. Thread-safe: the engine may be used from several
    threads, each with its own event loop."""

    def __init__(self, seed: int = 0) -> None:
        self.store = MemoryEngine()
        self._lock = threading.Lock()
        self._ts = 0
        self._views: dict[int, MemorySnapshot] = {}
        # key -> (start ts, commit ts) of the last transaction that wrote it
        self._committed_at: dict[bytes, tuple[int, int]] = {}
        self._commit_faults: deque[str | None] = deque()
        self._read_failures = 0
        self._read_failure = UNAVAILABLE
        self._rng = random.Random(seed)
        self.down = False
        self.connect_hangs = False
        self.max_response_bytes: int | None = None
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        self.after_commit: Callable[[], Awaitable[None]] | None = None
        self.leaked = 0  # transactions freed while active
        self.calls: Counter[str] = Counter()
        self.scan_limits: list[int] = []

    # -- control ---------------------------------------------------------------

    def inject_commit(self, *faults: str | None) -> None:
        for f in faults:
            if f not in COMMIT_FAULTS:
                raise ValueError(f"unknown commit fault {f!r}")
            self._commit_faults.append(f)

    def fail_reads(self, n: int, locked: bool = False) -> None:
        self._read_failures = n
        self._read_failure = LOCKED if locked else UNAVAILABLE

    async def connect(self, pd_endpoints: list[str]) -> FakeTransactionClient:
        """TransactionClient.connect(pd_endpoints)."""
        if not isinstance(pd_endpoints, list):
            raise Exception("Please use list as pd_endpoints. For example: `TransactionClient.connect([127.0.0.1:2379])`.")
        if self.connect_hangs:
            await _never()
        if self.down:
            raise Exception(PD_DOWN)
        return FakeTransactionClient(self)

    def client(self) -> FakeTransactionClient:
        return FakeTransactionClient(self)

    async def raw(self) -> list[Pair]:
        """Every stored key and value, prefixes included (what TiKV holds)."""
        return await self.store.scan(b"", None)

    # -- internals used by the client objects ------------------------------

    def _request(self, what: str) -> None:
        self.calls[what] += 1
        if self.down:
            raise Exception(UNAVAILABLE)

    def _read(self, what: str) -> None:
        self._request(what)
        with self._lock:
            if self._read_failures > 0:
                self._read_failures -= 1
                raise Exception(self._read_failure)

    def _next_ts(self) -> int:
        with self._lock:
            self._ts += 1
            ts = self._ts
            self._views[ts] = self.store.snapshot()
            return ts

    def _view(self, ts: int) -> MemorySnapshot:
        view = self._views.get(ts)
        if view is None:
            # TiKV reads at any timestamp; the double only at the ones it
            # handed out, which is all the engine may use
            raise AssertionError(f"the double never handed out timestamp {ts}")
        return view

    def _check_size(self, pairs: Sequence[Pair] | Sequence[bytes]) -> None:
        limit = self.max_response_bytes
        if limit is None:
            return
        size = sum(len(p) if isinstance(p, bytes) else len(p[0]) + len(p[1]) for p in pairs)
        if size > limit:
            raise too_large(size, limit)

    async def _hook(self, name: str) -> None:
        hook = getattr(self, name)
        if hook is not None:
            setattr(self, name, None)  # once: the hook may commit too
            await hook()

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._commit_faults.popleft() if self._commit_faults else None

    async def _apply(self, start_ts: int, buffer: dict[bytes, tuple[str, bytes | None]]) -> int:
        """Prewrite's conflict check and the commit, atomically."""
        with self._lock:
            for key in buffer:
                winner, at = self._committed_at.get(key, (0, 0))
                if at > start_ts:
                    raise write_conflict(start_ts, winner, key, at)
            self._ts += 1
            commit_ts = self._ts
            wb = WriteBatch()
            for key, (kind, value) in buffer.items():
                if kind == "put":
                    wb.put(key, value)  # type: ignore[arg-type]
                elif kind == "del":
                    wb.delete(key)
                self._committed_at[key] = (start_ts, commit_ts)
            # MemoryEngine.write never suspends, so holding the thread lock
            # across this await keeps the commit atomic without blocking anyone long
            await self.store.write(wb)
            return commit_ts


async def _scan_view(view: MemorySnapshot, start: bytes, end: bytes | None, limit: int, include_start: bool, include_end: bool) -> list[Pair]:
    if limit >= 2**32:
        raise OverflowError("can't convert to u32")
    if limit == 0:
        return []
    if include_end and end is not None:
        end = end + b"\x00"
    if end is not None and end < start:
        raise Exception("invalid range")
    got = await view.scan(start, end, limit=limit + (0 if include_start else 1))
    if not include_start and got and got[0][0] == start:
        got = got[1:]
    return got[:limit]


class FakeSnapshot:
    """TransactionClient.snapshot(timestamp, pessimistic): reads at one timestamp."""

    def __init__(self, cluster: FakeTikv, ts: int) -> None:
        self._cluster = cluster
        self._ts = ts

    async def get(self, key: bytes) -> bytes | None:
        key = _bytes(key, "key")
        self._cluster._read("get")
        value = await self._cluster._view(self._ts).get(key)
        if value is not None:
            self._cluster._check_size([(key, value)])
        return value

    async def key_exists(self, key: bytes) -> bool:
        return await self.get(key) is not None

    async def batch_get(self, keys: Sequence[bytes]) -> list[Pair]:
        keys = [_bytes(k, "keys") for k in keys]
        self._cluster._read("batch_get")
        values = await self._cluster._view(self._ts).batch_get(keys)
        pairs = list({k: v for k, v in zip(keys, values) if v is not None}.items())
        self._cluster._rng.shuffle(pairs)  # the real client promises no order
        self._cluster._check_size(pairs)
        return pairs

    async def scan(self, start: bytes, end: bytes | None, limit: int, include_start: bool = True, include_end: bool = False) -> list[Pair]:
        start = _bytes(start, "start")
        end = None if end is None else _bytes(end, "end")
        self._cluster._read("scan")
        self._cluster.scan_limits.append(limit)
        got = await _scan_view(self._cluster._view(self._ts), start, end, limit, include_start, include_end)
        self._cluster._check_size(got)
        return got

    async def scan_keys(self, start: bytes, end: bytes | None, limit: int, include_start: bool = True, include_end: bool = False) -> list[bytes]:
        start = _bytes(start, "start")
        end = None if end is None else _bytes(end, "end")
        self._cluster._read("scan_keys")
        self._cluster.scan_limits.append(limit)
        keys = [k for k, _ in await _scan_view(self._cluster._view(self._ts), start, end, limit, include_start, include_end)]
        self._cluster._check_size(keys)
        return keys


class FakeTransaction:
    """An optimistic transaction: buffered writes, committed by commit()."""

    def __init__(self, cluster: FakeTikv, start_ts: int) -> None:
        self._cluster = cluster
        self.start_ts = start_ts
        self._buffer: dict[bytes, tuple[str, bytes | None]] = {}  # key -> ("put"|"del"|"lock", value)
        self.status = ACTIVE

    def __del__(self) -> None:
        if getattr(self, "status", None) == ACTIVE:
            self._cluster.leaked += 1

    def _active(self) -> None:
        if self.status != ACTIVE:
            raise Exception(AFTER_COMMIT)

    async def batch_get(self, keys: Sequence[bytes]) -> list[Pair]:
        self._active()
        keys = [_bytes(k, "keys") for k in keys]
        own = {k: self._buffer[k] for k in keys if k in self._buffer and self._buffer[k][0] != "lock"}
        rest = [k for k in keys if k not in own]
        pairs = dict(await FakeSnapshot(self._cluster, self.start_ts).batch_get(rest)) if rest else {}
        for k, (kind, value) in own.items():
            if kind == "put":
                pairs[k] = value  # type: ignore[assignment]
        return list(pairs.items())

    async def get(self, key: bytes) -> bytes | None:
        found = dict(await self.batch_get([key]))
        return found.get(key)

    async def lock_keys(self, keys: Sequence[bytes]) -> None:
        self._active()
        for k in keys:
            self._buffer.setdefault(_bytes(k, "keys"), ("lock", None))

    async def put(self, key: bytes, value: bytes) -> None:
        self._active()
        self._buffer[_bytes(key, "key")] = ("put", _bytes(value, "value"))

    async def delete(self, key: bytes) -> None:
        self._active()
        self._buffer[_bytes(key, "key")] = ("del", None)

    async def commit(self) -> None:
        if self.status not in (ACTIVE, STARTED_COMMIT):
            raise Exception(AFTER_COMMIT)
        self.status = STARTED_COMMIT
        cluster = self._cluster
        cluster._request("commit")
        if not self._buffer:
            return None
        await cluster._hook("before_commit")
        fault = cluster._next_fault()
        if fault == "conflict":
            raise write_conflict(self.start_ts, self.start_ts + 1, next(iter(self._buffer)), self.start_ts + 2)
        if fault == "undetermined-before":
            raise Exception(UNDETERMINED)
        if fault == "region-error":
            raise Exception(REGION_ERROR)
        if fault == "hang-before":
            await _never()
        await cluster._apply(self.start_ts, self._buffer)
        await cluster._hook("after_commit")
        if fault == "undetermined-after":
            raise Exception(UNDETERMINED)
        if fault == "hang-after":
            await _never()
        self.status = COMMITTED
        return None

    async def rollback(self) -> None:
        if self.status not in (ACTIVE, STARTED_COMMIT):
            raise Exception(AFTER_COMMIT)
        self._cluster._request("rollback")
        self.status = ROLLED_BACK


class FakeTransactionClient:
    """tikv_client.asynchronous.TransactionClient over a FakeTikv."""

    def __init__(self, cluster: FakeTikv) -> None:
        self._cluster = cluster

    async def begin(self, pessimistic: bool = False) -> FakeTransaction:
        if pessimistic:
            raise NotImplementedError("the double has optimistic transactions only")
        self._cluster._request("begin")
        return FakeTransaction(self._cluster, self._cluster._next_ts())

    async def current_timestamp(self) -> int:
        self._cluster._request("timestamp")
        return self._cluster._next_ts()

    def snapshot(self, timestamp: int, pessimistic: bool) -> FakeSnapshot:
        if not isinstance(timestamp, int):
            raise TypeError(f"argument 'timestamp': '{type(timestamp).__name__}' object cannot be interpreted as an integer")
        return FakeSnapshot(self._cluster, timestamp)
