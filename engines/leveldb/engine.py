"""The LevelDB engine (via plyvel): brain's default, single-process engine.

Durability: a synced write goes to brain's write-ahead log first
(engines/wal.py, one fdatasync on a preallocated file), then to LevelDB
without LevelDB's own sync, whose appends to an ever-growing log cost a
journal commit per sync. The log's checkpoints sync LevelDB's log files on a
thread before a segment is reused, and an open replays what LevelDB may have
lost. `write_ahead_log=False` makes LevelDB sync each write itself.

Threading model:
- Reads run synchronously inside the coroutines: a LevelDB get or a short
  iterator step takes microseconds, far less than a hop to a thread.
- Synced writes run inline, on the caller's thread, while syncs are fast:
  an fsync of a fraction of a millisecond blocks the event loop for less
  than a hand-off to a thread and back costs (two wakeups and the GIL passed
  twice, with the event loop contending for it).
- A write of more than INLINE_MAX_OPS ops (one DeleteRange or revoke of
  very many keys) runs on the write thread whatever the syncs take: built
  and applied there, it holds the GIL in turns, not the event loop for its
  whole length.
- When syncs get slow (their moving average passes `inline_sync_max`, e.g.
  a busy disk), synced writes move to a single thread owned by the engine,
  so the event loop keeps serving reads meanwhile. One thread keeps the
  writes in submission order and means at most one fsync is in flight (the
  MVCC layer already groups many requests into one batch, so more write
  threads would buy nothing). The average keeps being measured on the
  thread, and writes return inline once it falls again.
- Unsynced writes are applied inline (LevelDB only appends to its log and
  memtable), unless a write is queued on the thread or holds the commit
  lock: then they queue behind it on the write thread.
- `_lock` (a threading.Lock: one process, possibly several threads each with
  an event loop) makes commit_if's check-then-write atomic with respect to
  every other write.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from threading import Lock
from typing import Any, Callable, Sequence

import plyvel

from engines.base import ConflictError, EngineClosedError, EngineError, EngineFeatures, EngineFullError, WriteBatch, check_key
from engines.leveldb import files
from engines.leveldb.files import DiskRoom
from engines.leveldb.reads import LevelDBSnapshot, scan
from engines.validate import Op, batch_ops, check_expect, check_keys, check_ops, check_scan
from engines.timings import DurationHistogram
from engines.wal import DEFAULT_SEGMENT_SIZE, WriteAheadLog

log = logging.getLogger(__name__)

# Synced writes run inline while their moving average stays below this
# (seconds); see the threading model above.
INLINE_SYNC_MAX = 0.001
# Writes of more ops than this run on the write thread whatever the syncs
# take (a group commit of ordinary requests stays far below it).
INLINE_MAX_OPS = 16384
READ_THREADS = 2
_SYNC_EWMA_WEIGHT = 0.1  # of the newest sync in the moving average



class LevelDBEngine:
    """An ordered key-value engine in a LevelDB database at data_dir.

    Writes are synced (fsync before returning) unless a caller passes
    sync=False. Only one process may open a data directory at a time: LevelDB
    holds a lock on <data_dir>/LOCK, and a second opener gets EngineLockedError.
    """

    name = "leveldb"
    durable = True
    features = EngineFeatures(
        # synced writes run one by one on one thread, in call order; a write
        # that finds the commit lock free runs inline, after every earlier one
        ordered_writes=True,
        inline_sync_hint=True,
        disk_size=True,
        compact_range=True,
        latency_histograms=True,
        sync_counters=True,
    )

    def __init__(
        self,
        data_dir: str,
        create: bool = True,
        *,
        # 64 MiB memtables: fewer level-0 files to compact under a steady
        # write load
        write_buffer_size: int = 64 << 20,
        lru_cache_size: int = 64 << 20,
        block_size: int = 16 << 10,
        max_open_files: int = 1000,
        bloom_filter_bits: int = 10,
        compression: str | None = "snappy",
        paranoid_checks: bool = False,
        inline_sync_max: float = INLINE_SYNC_MAX,
        # sync through brain's own log (engines/wal.py) instead of LevelDB's
        write_ahead_log: bool = True,
        wal_segment_size: int = DEFAULT_SEGMENT_SIZE,
        # free disk space below which writes are refused (files.DiskRoom);
        # None: two memtables, or an eighth of a smaller filesystem;
        # negative: no check, the disk's own "no space" is the only limit
        disk_reserve_bytes: int | None = None,
    ) -> None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"leveldb data_dir must be a path, not {type(data_dir).__name__}")
        self.data_dir = os.fspath(data_dir)
        if not self.data_dir:
            raise ValueError("leveldb needs a data directory")
        if create:
            # like etcd: the data directory is private to the server's user
            os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        elif not os.path.isdir(self.data_dir):
            raise EngineError(f"leveldb data directory {self.data_dir} does not exist (and create is false)")
        self._db = files.open_db(
            self.data_dir,
            create,
            paranoid_checks=paranoid_checks,
            write_buffer_size=write_buffer_size,
            lru_cache_size=lru_cache_size,
            block_size=block_size,
            max_open_files=max_open_files,
            bloom_filter_bits=bloom_filter_bits,
            compression=compression,
        )
        self._closed = False
        # for etcd's disk histograms: the syncs that make a write durable (the
        # log's fdatasync, or LevelDB's own synced write when the log is not
        # used) and whole commits, synced or not
        self.fsync_durations = DurationHistogram()
        self.commit_durations = DurationHistogram()
        self._wal: WriteAheadLog | None = None
        if write_ahead_log:
            try:
                self._wal = self._open_wal(wal_segment_size)
            except BaseException:
                self._db.close()
                raise
        self._lock = Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leveldb-sync")
        self._readers = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="leveldb-read")
        self.scans_on_thread = 0
        self._queued = 0  # writes handed to the thread and not yet returned
        self.inline_sync_max = inline_sync_max
        self._room = DiskRoom.default(self.data_dir, disk_reserve_bytes, write_buffer_size)
        # set once an append to LevelDB's own log failed for lack of space
        # (see _commit_locked)
        self._log_torn: str | None = None
        # bytes of the keys and values written since the open: about what
        # the database grew by, which keeps a size
        # measured now and then (the space quota's) current
        self.bytes_written = 0
        self.sync_seconds = 0.0  # moving average of synced writes' duration
        self.synced_inline = 0  # synced writes made inline / on the thread
        self.synced_on_thread = 0
        # live snapshots, so close() can release them before closing the DB
        self._snapshots: weakref.WeakSet[LevelDBSnapshot] = weakref.WeakSet()

    def _open_wal(self, segment_size: int) -> WriteAheadLog:
        wal = WriteAheadLog(self.data_dir, self._sync_leveldb_logs, segment_size, self.fsync_durations)
        try:
            for ops in wal.recover():
                self._write_batch(ops, False)[0].write()
            self._sync_leveldb_logs()
        except BaseException:
            wal.close()
            raise
        wal.start()
        return wal

    def _sync_leveldb_logs(self) -> None:
        """Runs on the log's checkpoint thread, before a segment is reused."""
        files.sync_leveldb_logs(self.data_dir)

    def __repr__(self) -> str:
        return f"LevelDBEngine({self.data_dir!r}{', closed' if self._closed else ''})"

    def _db_open(self) -> Any:
        if self._closed:
            raise EngineClosedError(f"leveldb engine ({self.data_dir}) used after close()")
        return self._db

    # reads

    async def get(self, key: bytes) -> bytes | None:
        key = check_key(key)
        try:
            return self._db_open().get(key)
        except RuntimeError as e:
            raise EngineClosedError(f"leveldb: {e}") from None

    async def batch_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        ks = check_keys(keys)
        try:
            db = self._db_open()
            if len(ks) <= 1:
                return [db.get(k) for k in ks]
            # a synced write may land between two gets (it runs on the write
            # thread): read all keys from one snapshot so they are consistent
            snap = db.snapshot()
            try:
                return [snap.get(k) for k in ks]
            finally:
                snap.close()
        except RuntimeError as e:
            raise EngineClosedError(f"leveldb: {e}") from None

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
            # a LevelDB iterator reads from an implicit snapshot: consistent
            return await scan(self, self._db_open(), s, e, n, reverse, keys_only)
        except RuntimeError as err:
            raise EngineClosedError(f"leveldb: {err}") from None

    @property
    def closed(self) -> bool:
        return self._closed

    async def read_on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.scans_on_thread += 1
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def snapshot(self) -> LevelDBSnapshot:
        snap = LevelDBSnapshot(self, self._db_open().snapshot())
        self._snapshots.add(snap)
        return snap

    # writes

    def syncs_inline(self) -> bool:
        """Whether a synced write of at most INLINE_MAX_OPS ops made now
        would run on the caller's thread (returning once durable, without
        suspending the caller)."""
        return self.sync_seconds < self.inline_sync_max and not self._queued and not self._lock.locked()

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        await self._commit((), batch, sync, False)

    async def commit_if(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> None:
        await self._commit(check_expect(expect), batch, sync, False)

    async def commit_snapshot(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> LevelDBSnapshot:
        """commit_if, and the snapshot of what it left (ordered_writes): taken
        under the commit lock, before the write queued behind this one."""
        raw = await self._commit(check_expect(expect), batch, sync, True)
        snap = LevelDBSnapshot(self, raw)
        self._snapshots.add(snap)
        return snap

    async def _commit(self, expect: Sequence[Op], batch: WriteBatch, sync: bool, snapshot: bool) -> Any:
        """The commit, and a plyvel snapshot taken right after it if asked."""
        # a write of very many ops (a revoke or DeleteRange of many keys) is
        # copied, checked, built and applied on the write thread, leaving the
        # event loop the GIL in turns (the caller leaves its batch alone
        # while the write is pending)
        big = isinstance(batch, WriteBatch) and len(batch.ops) > INLINE_MAX_OPS
        ops = batch.ops if big else check_ops(batch_ops(batch))
        self._db_open()
        sync = bool(sync)
        # inline only when no write is queued for the thread: writes take
        # effect in call order (ordered_writes)
        inline = (not sync or self.sync_seconds < self.inline_sync_max) and not big
        if inline and not self._queued and self._lock.acquire(blocking=False):
            try:
                if sync:
                    self.synced_inline += 1
                self._commit_locked(expect, ops, sync)
                return self._db.snapshot() if snapshot else None
            finally:
                self._lock.release()
        if sync:
            self.synced_on_thread += 1
        loop = asyncio.get_running_loop()
        self._queued += 1
        try:
            return await loop.run_in_executor(
                self._executor, self._commit_on_thread, expect, ops, sync, snapshot, big
            )
        except RuntimeError:  # the executor was shut down by a concurrent close()
            if self._closed:
                raise EngineClosedError(f"leveldb engine ({self.data_dir}) closed during a write") from None
            raise
        finally:
            self._queued -= 1

    def _write_batch(self, ops: Sequence[Op], sync: bool) -> tuple[Any, int]:
        """LevelDB's batch of the ops, and their bytes (counted in the same
        pass: a batch may hold millions of ops)."""
        wb = self._db.write_batch(sync=sync)
        put, delete = wb.put, wb.delete
        size = 0
        for key, value in ops:
            if value is None:
                delete(key)
                size += len(key)
            else:
                put(key, value)
                size += len(key) + len(value)
        return wb, size

    def _commit_on_thread(self, expect: Sequence[Op], ops: list[Op], sync: bool, snapshot: bool, unchecked: bool = False) -> Any:
        if unchecked:  # a big batch: its ops are copied and checked here, off the loop
            ops = check_ops(list(ops))
        with self._lock:
            self._commit_locked(expect, ops, sync)
            return self._db.snapshot() if snapshot else None

    def _commit_locked(self, expect: Sequence[Op], ops: list[Op], sync: bool) -> None:
        db = self._db
        for key, want in expect:
            if db.get(key) != want:
                raise ConflictError(f"commit_if: key {key!r} no longer holds the expected value")
        if self._log_torn is not None:
            raise EngineFullError(
                f"leveldb in {self.data_dir} takes no writes since a write to its log failed ({self._log_torn}); "
                "restart brain once space is freed (brain's write-ahead log holds every acknowledged write)"
            )
        self._room.check(self.bytes_written)
        wal = self._wal
        t0 = time.perf_counter()
        mark = None
        if wal is not None:
            try:
                mark = wal.append(ops, sync)
            except OSError as e:
                cls = EngineFullError if e.errno == errno.ENOSPC else EngineError
                raise cls(f"leveldb write-ahead log in {self.data_dir} failed: {e}") from None
        # logged: LevelDB need not sync (a batch too large for the log, mark
        # None, is synced by LevelDB itself)
        leveldb_syncs = sync and mark is None
        wb, size = self._write_batch(ops, leveldb_syncs)
        t_write = time.perf_counter()
        try:
            wb.write()
        except plyvel.Error as e:
            if mark is not None:
                wal.undo(mark)  # type: ignore[union-attr]
            msg = files.message(e)
            if not files.disk_full(msg):
                raise EngineError(f"leveldb write in {self.data_dir} failed: {msg}") from None
            # LevelDB's log may now end in part of a record, which later
            # appends would follow: no more writes until a reopen recovers it
            self._log_torn = msg
            log.error("leveldb in %s: a write to its log failed for lack of space; writes are refused until a restart", self.data_dir)
            raise EngineFullError(f"leveldb write in {self.data_dir} failed: {msg}") from None
        t_end = time.perf_counter()
        if leveldb_syncs:
            self.fsync_durations.observe(t_end - t_write)
        took = t_end - t0
        self.commit_durations.observe(took)
        self.bytes_written += size
        if sync:
            self.sync_seconds += _SYNC_EWMA_WEIGHT * (took - self.sync_seconds)

    # maintenance (declared features: disk_size, compact_range)

    def disk_size(self) -> int:
        """Bytes of the database's files, brain's write-ahead log left out."""
        return files.disk_size(self.data_dir)

    async def compact_range(self) -> None:
        """Compact the whole database (etcd's Defragment), off the event loop."""
        db = self._db_open()
        await asyncio.get_running_loop().run_in_executor(self._executor, db.compact_range)

    async def close(self) -> None:
        """Finish queued writes, release snapshots, close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # the write thread runs jobs in order: once this no-op ran, every
        # write accepted before close() has been applied
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, lambda: None)
        self._executor.shutdown(wait=True)
        # scans still running on the read threads finish before the
        # database they iterate is closed
        await loop.run_in_executor(None, self._readers.shutdown, True)
        # the memtable goes to a table file now, so the next open does not
        # rebuild it from LevelDB's log (a range with no keys: only the
        # memtable is compacted)
        try:
            await loop.run_in_executor(None, lambda: self._db.compact_range(start=b"\x00", stop=b"\x00\x00"))
        except plyvel.Error as e:
            log.warning("leveldb: flushing the memtable at close failed: %s", e)
        with self._lock:
            for snap in list(self._snapshots):
                snap.close()
            if self._wal is not None:
                self._wal.close()
            self._db.close()
