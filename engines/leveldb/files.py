"""The LevelDB engine's files: opening the database (and telling a held lock
from other errors), syncing LevelDB's logs, the database's size on disk, and
the free space kept in reserve for LevelDB's own writes."""
from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import plyvel

from engines.base import EngineError, EngineFullError, EngineLockedError
from engines.wal import SEGMENT_NAMES

# LevelDB reports a held LOCK file as "IO error: lock <dir>/LOCK: <reason>"
# (another process: fcntl's EAGAIN; this process: "already held by process").
# Other IO errors on the LOCK file (e.g. permission denied) lack the "lock "
# prefix and stay plain EngineErrors.
_LOCK_HELD = re.compile(r"\block \S*LOCK\b")

ROOM_CHECK_INTERVAL = 0.1  # seconds an answer about free disk space is trusted


def message(e: BaseException) -> str:
    # plyvel's exceptions carry LevelDB's status as bytes
    arg = e.args[0] if e.args else e
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def disk_full(message: str) -> bool:
    # LevelDB reports a failed append as "IO error: <file>: <strerror>"
    return os.strerror(errno.ENOSPC) in message


def open_db(data_dir: str, create: bool, **options: Any) -> Any:
    """plyvel.DB(data_dir, ...), its errors as engine errors: EngineLockedError
    when another process (or this one) holds the directory."""
    try:
        return plyvel.DB(data_dir, create_if_missing=create, **options)
    except plyvel.IOError as e:
        msg = message(e)
        if _LOCK_HELD.search(msg):
            raise EngineLockedError(
                f"data directory {data_dir} is in use by another brain process "
                f"(its LevelDB lock file {os.path.join(data_dir, 'LOCK')} is held): {msg}"
            ) from None
        raise EngineError(f"cannot open leveldb in {data_dir}: {msg}") from None
    except plyvel.Error as e:
        raise EngineError(f"cannot open leveldb in {data_dir}: {message(e)}") from None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_leveldb_logs(data_dir: str) -> None:
    """Make every write LevelDB has applied durable: sync its log files
    (the current one and any older one whose memtable is not yet in a
    table file) and the directory."""
    with os.scandir(data_dir) as it:
        logs = [e.path for e in it if e.name.endswith(".log")]
    for path in logs:
        try:
            _fsync(path)
        except FileNotFoundError:  # flushed to a table file and removed meanwhile
            pass
    _fsync(data_dir)


def disk_size(data_dir: str) -> int:
    """Bytes of the database's files: the data directory's files but the
    write-ahead log's segments (like etcd's db size, which leaves out its
    WAL; the segments stay at their full size once grown)."""
    total = 0
    with os.scandir(data_dir) as it:
        for entry in it:
            if entry.name in SEGMENT_NAMES:
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # a compaction removed it meanwhile
                pass
    return total


@dataclass
class DiskRoom:
    """Refuses writes while the disk's free space is below a reserve.

    A write LevelDB fails to append to its log may leave part of a record
    there, and LevelDB goes on appending after it, so that a recovery from
    that log would skip what follows; and a memtable flush or compaction
    that meets a full disk stops LevelDB's writes until it is reopened.
    Refusing writes before the disk is full keeps both from happening, and
    the refusal ends by itself once space is freed.

    The disk is asked (a system call) only when the last answer is old or
    much has been written since: the room above the reserve it reported
    lasts a quarter of itself, or a tenth of a second (other processes
    share the disk)."""

    data_dir: str
    # negative: no check, the disk's own "no space" is the only limit
    reserve_bytes: int
    _until: float = 0.0  # until when the disk is known to have room
    _written_until: int = 0  # ... and while bytes_written stays below this

    @classmethod
    def default(cls, data_dir: str, reserve_bytes: int | None, write_buffer_size: int) -> DiskRoom:
        """reserve_bytes None: two memtables, or an eighth of a smaller filesystem."""
        if reserve_bytes is None:
            st = os.statvfs(data_dir)
            reserve_bytes = min(2 * write_buffer_size, st.f_blocks * st.f_frsize // 8)
        return cls(data_dir, reserve_bytes)

    def check(self, bytes_written: int) -> None:
        """Raise EngineFullError when the disk's free space is below the
        reserve; bytes_written: the engine's count of bytes written."""
        if self.reserve_bytes < 0:
            return
        now = time.monotonic()
        if now < self._until and bytes_written < self._written_until:
            return
        st = os.statvfs(self.data_dir)
        free = st.f_bavail * st.f_frsize
        if free >= self.reserve_bytes:
            self._until = now + ROOM_CHECK_INTERVAL
            self._written_until = bytes_written + (free - self.reserve_bytes) // 4
        else:
            raise EngineFullError(
                f"leveldb in {self.data_dir}: {free} bytes free on its disk, "
                f"below the reserve of {self.reserve_bytes} kept for LevelDB's own writes"
            )
