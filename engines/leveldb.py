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
  twice, with the event loop contending for it). Measured on 2 cores with
  txns at 64 in flight (medians of 3 alternating rounds): creates 10.6k/s
  through the thread, 11.0k/s inline; updates 9.3k/s and 10.6k/s.
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
import re
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from threading import Lock
from typing import Any, Sequence

import plyvel

from engines.base import (
    ConflictError,
    EngineClosedError,
    EngineError,
    EngineFeatures,
    EngineFullError,
    EngineLockedError,
    WriteBatch,
    check_key,
)
from engines.validate import Op, check_batch, check_expect, check_keys, check_scan
from engines.timings import DurationHistogram
from engines.wal import DEFAULT_SEGMENT_SIZE, SEGMENT_NAMES, WriteAheadLog

log = logging.getLogger(__name__)

# LevelDB reports a held LOCK file as "IO error: lock <dir>/LOCK: <reason>"
# (another process: fcntl's EAGAIN; this process: "already held by process").
# Other IO errors on the LOCK file (e.g. permission denied) lack the "lock "
# prefix and stay plain EngineErrors.
_LOCK_HELD = re.compile(r"\block \S*LOCK\b")

# Synced writes run inline while their moving average stays below this
# (seconds); see the threading model above.
INLINE_SYNC_MAX = 0.001
# Pairs a scan reads on the caller's thread before it moves to a read
# thread (see _scan): a list page reads on the loop, a whole-range list not.
INLINE_SCAN_ITEMS = 1024
READ_THREADS = 2
_SYNC_EWMA_WEIGHT = 0.1  # of the newest sync in the moving average
_ROOM_CHECK_INTERVAL = 0.1  # seconds an answer about free disk space is trusted


def _message(e: BaseException) -> str:
    # plyvel's exceptions carry LevelDB's status as bytes
    arg = e.args[0] if e.args else e
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def _disk_full(message: str) -> bool:
    # LevelDB reports a failed append as "IO error: <file>: <strerror>"
    return os.strerror(errno.ENOSPC) in message


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _scan(engine: LevelDBEngine, reader: Any, start: bytes, end: bytes | None, limit: int, reverse: bool, keys_only: bool) -> list[tuple[bytes, bytes]]:
    """Scan a plyvel DB or snapshot (both have the same iterator API).

    The first INLINE_SCAN_ITEMS pairs are read on the caller's thread;
    a scan with more to read finishes on the engine's read threads, so a
    long scan never holds the event loop: plyvel steps its iterator without
    the GIL, and the loop runs between steps."""
    if reverse:
        return _scan_reverse(reader, start, end, limit, keys_only)
    it = reader.iterator(start=start, stop=end, include_value=not keys_only)
    handed_off = False
    try:
        first = limit if 0 < limit <= INLINE_SCAN_ITEMS else INLINE_SCAN_ITEMS
        found = list(islice(it, first))
        if keys_only:
            found = [(k, b"") for k in found]
        if len(found) == first and first != limit:
            rest = limit - first if limit else None
            handed_off = True
            found += await engine._read_on_thread(_drain, it, rest, keys_only)
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


def _scan_reverse(reader: Any, start: bytes, end: bytes | None, limit: int, keys_only: bool) -> list[tuple[bytes, bytes]]:
    # not plyvel's iterator(reverse=True): with start and stop set it yields
    # nothing when the only key in range is start itself (plyvel 1.5.1)
    it = reader.raw_iterator()
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

    def __init__(self, engine: LevelDBEngine, snap: Any) -> None:
        self._engine = engine
        self._snap = snap

    def _reader(self) -> Any:
        if self._engine._closed:
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
            return await _scan(self._engine, self._reader(), s, e, n, reverse, keys_only)
        except RuntimeError as err:
            raise EngineClosedError(f"leveldb snapshot: {err}") from None

    def close(self) -> None:
        snap, self._snap = self._snap, None
        if snap is not None:
            snap.close()  # plyvel makes this a no-op once the DB is closed


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
        # write load. Measured (txn creates, 4 runs of 5 s on one server):
        # 13.9/11.2/12.3/11.2k/s with 32 MiB, 15.8/12.5/13.8/13.0k/s with 64.
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
        # free disk space below which writes are refused (see _check_room);
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
        try:
            self._db = plyvel.DB(
                self.data_dir,
                create_if_missing=create,
                paranoid_checks=paranoid_checks,
                write_buffer_size=write_buffer_size,
                lru_cache_size=lru_cache_size,
                block_size=block_size,
                max_open_files=max_open_files,
                bloom_filter_bits=bloom_filter_bits,
                compression=compression,
            )
        except plyvel.IOError as e:
            msg = _message(e)
            if _LOCK_HELD.search(msg):
                raise EngineLockedError(
                    f"data directory {self.data_dir} is in use by another brain process "
                    f"(its LevelDB lock file {os.path.join(self.data_dir, 'LOCK')} is held): {msg}"
                ) from None
            raise EngineError(f"cannot open leveldb in {self.data_dir}: {msg}") from None
        except plyvel.Error as e:
            raise EngineError(f"cannot open leveldb in {self.data_dir}: {_message(e)}") from None
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
        if disk_reserve_bytes is None:
            st = os.statvfs(self.data_dir)
            disk_reserve_bytes = min(2 * write_buffer_size, st.f_blocks * st.f_frsize // 8)
        self.disk_reserve_bytes = disk_reserve_bytes
        # set once an append to LevelDB's own log failed for lack of space
        # (see _commit_locked)
        self._log_torn: str | None = None
        # bytes of the writes made since the open (as brain's log encodes
        # them): about what the database grew by, which keeps a size
        # measured now and then (the space quota's) current
        self.bytes_written = 0
        # until when the disk is known to have room (see _check_room)
        self._room_until = 0.0
        self._room_written_until = 0
        self.sync_seconds = 0.0  # moving average of synced writes' duration
        self.synced_inline = 0  # synced writes made inline / on the thread
        self.synced_on_thread = 0
        # live snapshots, so close() can release them before closing the DB
        self._snapshots: weakref.WeakSet[LevelDBSnapshot] = weakref.WeakSet()

    def _open_wal(self, segment_size: int) -> WriteAheadLog:
        wal = WriteAheadLog(self.data_dir, self._sync_leveldb_logs, segment_size, self.fsync_durations)
        try:
            for ops in wal.recover():
                self._write_batch(ops, False).write()
            self._sync_leveldb_logs()
        except BaseException:
            wal.close()
            raise
        wal.start()
        return wal

    def _sync_leveldb_logs(self) -> None:
        """Make every write LevelDB has applied durable: sync its log files
        (the current one and any older one whose memtable is not yet in a
        table file) and the directory. Runs on the log's checkpoint thread."""
        with os.scandir(self.data_dir) as it:
            logs = [e.path for e in it if e.name.endswith(".log")]
        for path in logs:
            try:
                _fsync(path)
            except FileNotFoundError:  # flushed to a table file and removed meanwhile
                pass
        _fsync(self.data_dir)

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
            return await _scan(self, self._db_open(), s, e, n, reverse, keys_only)
        except RuntimeError as err:
            raise EngineClosedError(f"leveldb: {err}") from None

    async def _read_on_thread(self, fn: Any, *args: Any) -> Any:
        self.scans_on_thread += 1
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def snapshot(self) -> LevelDBSnapshot:
        snap = LevelDBSnapshot(self, self._db_open().snapshot())
        self._snapshots.add(snap)
        return snap

    # writes

    def syncs_inline(self) -> bool:
        """Whether a synced write made now would run on the caller's thread
        (returning once durable, without suspending the caller)."""
        return self.sync_seconds < self.inline_sync_max and not self._queued and not self._lock.locked()

    async def write(self, batch: WriteBatch, sync: bool = True) -> None:
        await self._commit((), check_batch(batch), sync)

    async def commit_if(
        self,
        expect: Sequence[tuple[bytes, bytes | None]],
        batch: WriteBatch,
        sync: bool = True,
    ) -> None:
        await self._commit(check_expect(expect), check_batch(batch), sync)

    async def _commit(self, expect: Sequence[Op], ops: list[Op], sync: bool) -> None:
        self._db_open()
        sync = bool(sync)
        # inline only when no write is queued for the thread: writes take
        # effect in call order (ordered_writes)
        inline = not sync or self.sync_seconds < self.inline_sync_max
        if inline and not self._queued and self._lock.acquire(blocking=False):
            try:
                if sync:
                    self.synced_inline += 1
                self._commit_locked(expect, ops, sync)
            finally:
                self._lock.release()
            return
        if sync:
            self.synced_on_thread += 1
        loop = asyncio.get_running_loop()
        self._queued += 1
        try:
            await loop.run_in_executor(self._executor, self._commit_on_thread, expect, ops, sync)
        except RuntimeError:  # the executor was shut down by a concurrent close()
            if self._closed:
                raise EngineClosedError(f"leveldb engine ({self.data_dir}) closed during a write") from None
            raise
        finally:
            self._queued -= 1

    def _write_batch(self, ops: Sequence[Op], sync: bool) -> Any:
        wb = self._db.write_batch(sync=sync)
        for key, value in ops:
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        return wb

    def _commit_on_thread(self, expect: Sequence[Op], ops: list[Op], sync: bool) -> None:
        with self._lock:
            self._commit_locked(expect, ops, sync)

    def _check_room(self) -> None:
        """Refuse a write while the disk's free space is below the reserve.

        A write LevelDB fails to append to its log may leave part of a
        record there, and LevelDB goes on appending after it, so that a
        recovery from that log would skip what follows; and a memtable flush
        or compaction that meets a full disk stops LevelDB's writes until it
        is reopened. Refusing writes before the disk is full keeps both from
        happening, and the refusal ends by itself once space is freed.

        The disk is asked (a system call) only when the last answer is old
        or much has been written since: the room above the reserve it
        reported lasts a quarter of itself, or a tenth of a second (other
        processes share the disk)."""
        now = time.monotonic()
        if now < self._room_until and self.bytes_written < self._room_written_until:
            return
        st = os.statvfs(self.data_dir)
        free = st.f_bavail * st.f_frsize
        if free >= self.disk_reserve_bytes:
            self._room_until = now + _ROOM_CHECK_INTERVAL
            self._room_written_until = self.bytes_written + (free - self.disk_reserve_bytes) // 4
        else:
            raise EngineFullError(
                f"leveldb in {self.data_dir}: {free} bytes free on its disk, "
                f"below the reserve of {self.disk_reserve_bytes} kept for LevelDB's own writes"
            )

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
        if self.disk_reserve_bytes >= 0:
            self._check_room()
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
        wb = self._write_batch(ops, leveldb_syncs)
        t_write = time.perf_counter()
        try:
            wb.write()
        except plyvel.Error as e:
            if mark is not None:
                wal.undo(mark)  # type: ignore[union-attr]
            msg = _message(e)
            if not _disk_full(msg):
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
        if mark is not None:
            self.bytes_written += wal.last_length  # type: ignore[union-attr]
        else:
            self.bytes_written += sum(len(k) + (len(v) if v is not None else 0) for k, v in ops)
        if sync:
            self.sync_seconds += _SYNC_EWMA_WEIGHT * (took - self.sync_seconds)

    # maintenance (declared features: disk_size, compact_range)

    def disk_size(self) -> int:
        """Bytes of the database's files: the data directory's files but the
        write-ahead log's segments (like etcd's db size, which leaves out its
        WAL; the segments stay at their full size once grown)."""
        total = 0
        with os.scandir(self.data_dir) as it:
            for entry in it:
                if entry.name in SEGMENT_NAMES:
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # a compaction removed it meanwhile
                    pass
        return total

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
                s, snap._snap = snap._snap, None
                if s is not None:
                    s.close()
            if self._wal is not None:
                self._wal.close()
            self._db.close()
