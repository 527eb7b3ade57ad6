"""The TiKV engine: the engine contract on tikv-client's optimistic transactions.

How the contract maps onto TiKV:
- Reads run at a timestamp from PD's timestamp oracle (TSO). The engine's own
  get/batch_get/scan take a fresh timestamp each, so they see every write
  committed before the call.
- snapshot() is synchronous in the contract, while a fresh timestamp costs a
  PD round trip. So the engine keeps `read_ts`, the newest timestamp it holds:
  after every commit it fetches a timestamp (which is above the commit's own),
  and every fresh read timestamp advances it too. A snapshot reads at read_ts:
  it sees every write this engine made, or saw, before snapshot() was called,
  and nothing after. Writes by other processes after read_ts are not seen;
  catching that staleness is what commit_if is for.
- write() is one optimistic transaction (puts and deletes in batch order, so
  a later op on a key wins) committed with TiKV's two-phase commit. A write
  conflict there (another transaction committed one of the keys after this
  one began) is retried with a new transaction: write() is a blind write, so
  the retry means what the first try meant. After write_retries retries the
  ConflictError surfaces.
- commit_if() reads the expected keys in its transaction (at the start
  timestamp) and, when they match, locks the ones the batch does not write.
  A change to any of them after the start then fails prewrite with a write
  conflict: ConflictError, and nothing is written. Never an overwrite. After
  the commit, a key it wrote is read back (read_back.py): the client once
  reported a commit done that never happened.
- A commit that times out, or fails in any way other than a write conflict,
  raises CommitUnknownError. Cancelling the timed-out call drops the Rust
  client's commit, so nothing more is sent for it; whatever it had already
  sent settles on TiKV, and a reader of any of its keys waits for that
  (TiKV resolves the transaction's locks through its primary key), so a later
  read tells whether it landed. Such a transaction is deliberately NOT rolled
  back: tikv-client sends the rollback to every region at once, and if the
  primary had committed, rolling back the secondaries would tear the batch.
- durable is True: TiKV acknowledges a commit once Raft has replicated it,
  so `sync` changes nothing.
- features: shared. Several brain processes may open the same TiKV and key
  prefix, one after another (a replacement on another machine) or at once;
  the MVCC writer then makes every commit conditional on its revision key.

Every stored key carries the key prefix (engines.tikv.keyspace).
"""
from __future__ import annotations

import asyncio
import logging
import random
from threading import Lock
from typing import Awaitable, Callable, Sequence, TypeVar

from engines.base import (
    CommitUnknownError,
    ConflictError,
    EngineClosedError,
    EngineError,
    EngineFeatures,
    EngineUnavailableError,
    WriteBatch,
    check_key,
)
from engines.tikv import paging
from engines.tikv.client import ClientTransaction, TransactionClient
from engines.tikv.errors import (
    LockedError,
    ResponseTooLargeError,
    describe,
    is_locked,
    is_response_too_large,
    is_write_conflict,
)
from engines.tikv.keyspace import KeySpace
from engines.tikv.read_back import confirm_commit
from engines.tikv.snapshot import TikvSnapshot
from engines.validate import Op, check_batch, check_expect, check_keys, check_scan

log = logging.getLogger(__name__)

T = TypeVar("T")

# Keys per scan page or batch_get request. Kubernetes objects are a few KiB,
# so a page stays well under the client's 4 MiB response limit (pages that
# do not are halved).
DEFAULT_PAGE_SIZE = 256
# Bound on one read, begin or timestamp request, retries inside the client included.
DEFAULT_REQUEST_TIMEOUT = 20.0
# Bound on one commit. Past it the commit is abandoned with an unknown outcome.
DEFAULT_COMMIT_TIMEOUT = 10.0
DEFAULT_WRITE_RETRIES = 5
# After a successful commit the engine needs one more timestamp (see read_ts).
_TIMESTAMP_TRIES = 3


class TikvEngine:
    """brain's keys in TiKV, under key_prefix. Open one with TikvEngine.open()
    (given a connected client) or engines.tikv.open_tikv() (given PD endpoints)."""

    name = "tikv"
    durable = True
    features = EngineFeatures(shared=True)

    def __init__(
        self,
        client: TransactionClient,
        *,
        key_prefix: bytes = b"",
        page_size: int = DEFAULT_PAGE_SIZE,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        write_retries: int = DEFAULT_WRITE_RETRIES,
        where: str = "",
    ) -> None:
        if not isinstance(key_prefix, (bytes, bytearray)):
            raise TypeError(f"tikv key_prefix must be bytes, not {type(key_prefix).__name__}")
        if page_size < 1:
            raise ValueError(f"tikv page_size must be >= 1, not {page_size}")
        if request_timeout <= 0 or commit_timeout <= 0:
            raise ValueError("tikv timeouts must be positive")
        if write_retries < 0:
            raise ValueError(f"tikv write_retries must be >= 0, not {write_retries}")
        self._client: TransactionClient | None = client
        self._keys = KeySpace(bytes(key_prefix))
        self._page_size = page_size
        self._request_timeout = float(request_timeout)
        self._commit_timeout = float(commit_timeout)
        self._write_retries = write_retries
        self.where = where or "TiKV"  # for messages: which cluster
        self._closed = False
        # read_ts is advanced by several threads' event loops (the engine may
        # be shared by them), so it is guarded by a thread lock
        self._ts_lock = Lock()
        self._read_ts = 0

    @classmethod
    async def open(cls, client: TransactionClient, **options: object) -> TikvEngine:
        """An engine on a connected client; fetches its first timestamp, so
        that snapshot() works from the start."""
        engine = cls(client, **options)  # type: ignore[arg-type]
        await engine._fresh_ts()
        return engine

    def __repr__(self) -> str:
        return f"TikvEngine({self.where}, prefix={self._keys.prefix!r}{', closed' if self._closed else ''})"

    @property
    def key_prefix(self) -> bytes:
        return self._keys.prefix

    @property
    def read_ts(self) -> int:
        return self._read_ts

    @property
    def closed(self) -> bool:
        return self._closed

    # -- plumbing ------------------------------------------------------------

    def _live(self) -> TransactionClient:
        client = self._client
        if self._closed or client is None:
            raise EngineClosedError(f"tikv engine ({self.where}) used after close()")
        return client

    async def _call(self, what: str, aw: Awaitable[T], timeout: float | None = None) -> T:
        """Await one client request, bounded in time, with its failure as an engine error."""
        limit = self._request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(aw, limit)
        except TimeoutError:
            raise EngineUnavailableError(f"tikv {what}: {self.where} did not answer within {limit:g}s") from None
        except EngineError:
            raise
        except Exception as e:
            if is_response_too_large(e):
                raise ResponseTooLargeError(describe(e)) from None
            if is_locked(e):
                raise LockedError(f"tikv {what}: a key is locked by a transaction not settled yet ({self.where}): {describe(e)}") from None
            raise EngineUnavailableError(f"tikv {what} failed ({self.where}): {describe(e)}") from None

    async def _read(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """A read, tried again while it meets locks, for up to request_timeout.

        The client gives up on a lock after about 1.5 s of its own backoff,
        while the lock of a transaction whose writer died (a brain process
        killed mid-commit) lives for its time-to-live, a few seconds or up to
        about 30 s for one that was heartbeating; reads are idempotent, so
        waiting it out here is safe."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._request_timeout
        delay = 0.05
        while True:
            try:
                return await self._call(what, request(), timeout=max(deadline - loop.time(), 0.001))
            except LockedError:
                if loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _local(self, what: str, aw: Awaitable[T]) -> T:
        """A transaction call that only touches the client's buffer (put,
        delete and lock_keys in an optimistic transaction): no time bound."""
        try:
            return await aw
        except Exception as e:
            raise EngineError(f"tikv {what} failed: {describe(e)}") from None

    def _advance(self, ts: int) -> None:
        with self._ts_lock:
            if ts > self._read_ts:
                self._read_ts = ts

    async def _fresh_ts(self) -> int:
        ts = await self._call("timestamp", self._live().current_timestamp())
        self._advance(ts)
        return ts

    # -- reads (a snapshot's at its timestamp, the engine's at a fresh one) ------

    async def get_at(self, ts: int, key: bytes) -> bytes | None:
        client = self._live()
        stored = self._keys.key(key)
        return await self._read("get", lambda: client.snapshot(ts, False).get(stored))

    async def batch_get_at(self, ts: int, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        client = self._live()
        stored = self._keys.keys(keys)

        async def get_many(chunk: list[bytes]) -> list[tuple[bytes, bytes]]:
            return await self._read("batch_get", lambda: client.snapshot(ts, False).batch_get(chunk))

        found = await paging.batch_get(get_many, stored, self._page_size)
        return [found.get(k) for k in stored]

    async def scan_at(self, ts: int, start: bytes, end: bytes | None, limit: int, reverse: bool, keys_only: bool) -> list[tuple[bytes, bytes]]:
        client = self._live()
        s, e = self._keys.range(start, end)
        if e is not None and e <= s:
            return []

        async def read(cursor: bytes, include: bool, stop: bytes | None, n: int) -> list[tuple[bytes, bytes]]:
            if keys_only:
                keys = await self._read("scan", lambda: client.snapshot(ts, False).scan_keys(cursor, stop, n, include, False))
                return [(k, b"") for k in keys]
            return await self._read("scan", lambda: client.snapshot(ts, False).scan(cursor, stop, n, include, False))

        pairs = await paging.scan(read, s, e, limit, reverse, self._page_size)
        strip = self._keys.strip
        return [(strip(k), v) for k, v in pairs]

    async def get(self, key: bytes) -> bytes | None:
        key = check_key(key)
        return await self.get_at(await self._fresh_ts(), key)

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        ks = check_keys(keys)
        return await self.batch_get_at(await self._fresh_ts(), ks)

    async def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int = 0,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        s, e, n = check_scan(start, end, limit)
        return await self.scan_at(await self._fresh_ts(), s, e, n, reverse, keys_only)

    def snapshot(self) -> TikvSnapshot:
        self._live()
        with self._ts_lock:
            ts = self._read_ts
        return TikvSnapshot(self, ts)

    # -- writes ----------------------------------------------------------------

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        ops = check_batch(batch)
        self._live()
        if not ops:
            return
        attempt = 0
        while True:
            try:
                await self._transact((), ops)
                return
            except ConflictError as e:
                if attempt >= self._write_retries:
                    raise ConflictError(f"{e} (write gave up after {attempt + 1} tries)") from None
                # two blind writers of one key: back off a random little while
                attempt += 1
                log.debug("tikv write conflicted, retry %d: %s", attempt, e)
                await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))

    async def commit_if(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> None:
        want = check_expect(expect)
        ops = check_batch(batch)
        self._live()
        if want or ops:
            await self._transact(want, ops)

    async def _transact(self, expect: Sequence[Op], ops: list[Op]) -> None:
        """One optimistic transaction: check expect, apply ops, commit."""
        txn = await self._call("begin", self._live().begin(False))
        try:
            if expect:
                await self._hold_expectations(txn, expect, ops)
            key = self._keys.key
            for k, value in ops:
                if value is None:
                    await self._local("delete", txn.delete(key(k)))
                else:
                    await self._local("put", txn.put(key(k), value))
        except BaseException:
            await self._end(txn)
            raise
        try:
            await asyncio.wait_for(txn.commit(), self._commit_timeout)
        except TimeoutError:
            raise CommitUnknownError(
                f"tikv commit: {self.where} did not answer within {self._commit_timeout:g}s; the batch may or may not be applied"
            ) from None
        except Exception as e:
            if is_write_conflict(e):
                # prewrite failed, so nothing was committed: release the locks
                # it left now rather than when their time-to-live runs out
                await self._end(txn)
                raise ConflictError(f"tikv commit: write conflict: {describe(e)}") from None
            raise CommitUnknownError(f"tikv commit ({self.where}): {describe(e)}; the batch may or may not be applied") from None
        finally:
            # free the client's transaction as soon as possible: after an
            # abandoned commit its heartbeat keeps its locks alive until then
            del txn
        after = await self._after_commit()
        if expect and ops:
            await confirm_commit(self, ops[-1], after)  # see read_back.py

    async def _hold_expectations(self, txn: ClientTransaction, expect: Sequence[Op], ops: list[Op]) -> None:
        stored = [self._keys.key(k) for k, _ in expect]

        async def get_many(chunk: list[bytes]) -> list[tuple[bytes, bytes]]:
            return await self._read("read", lambda: txn.batch_get(chunk))

        found = await paging.batch_get(get_many, stored, self._page_size)
        for (k, want), sk in zip(expect, stored):
            if found.get(sk) != want:
                raise ConflictError(f"commit_if: key {k!r} no longer holds the expected value")
        written = {k for k, _ in ops}
        unwritten = list(dict.fromkeys(sk for (k, _), sk in zip(expect, stored) if k not in written))
        if unwritten:
            await self._local("lock_keys", txn.lock_keys(unwritten))

    async def _end(self, txn: ClientTransaction) -> None:
        """Roll back a transaction that will not commit (the client requires
        every transaction to end); a failure only leaves locks to expire."""
        try:
            await asyncio.wait_for(txn.rollback(), self._request_timeout)
        except Exception as e:
            log.debug("tikv rollback failed (its locks will expire): %s", describe(e))

    async def _after_commit(self) -> int:
        """Advance read_ts past the commit just made, so snapshots taken from
        now on see it; returns the timestamp."""
        err: EngineError | None = None
        for attempt in range(_TIMESTAMP_TRIES):
            try:
                return await self._fresh_ts()
            except EngineClosedError:
                raise
            except EngineError as e:
                err = e
                await asyncio.sleep(0.05 * (attempt + 1))
        raise CommitUnknownError(
            f"tikv: the batch committed, but no timestamp came from PD after it, so snapshots cannot see it yet: {err}"
        )

    async def close(self) -> None:
        """Stop using the client; the engine and its snapshots then raise
        EngineClosedError. Idempotent. The data stays in TiKV."""
        self._closed = True
        self._client = None
