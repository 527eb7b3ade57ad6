"""A write-ahead log that makes an engine's writes durable with cheap syncs.

Why: LevelDB syncs a write by fdatasync on its own log, a file that only
grows. On ext4 every such sync must also commit the journal (the file's size
changed), and once compaction writes files beside it, that commit waits for
them: an overwrite of a file already written with zeros syncs faster than
an append. So the engine writes each batch to
this log (zero-filled in advance, reused, synced with fdatasync) and applies
it to LevelDB without LevelDB's sync.

Layout: two segment files in the engine's directory, used in turn. Each
record is

  crc32 (4) | payload length (4) | seq (8) | payload

little-endian, the crc covering length, seq and payload. Seqs go up by one
from record to record across both segments. A payload is the op count (4)
and per op: key length (4), value length (4; 0xFFFFFFFF for a delete), key,
value.

Reusing a segment is safe once every record in it is durable in the engine
itself (a checkpoint: `checkpoint()` from the engine, run on a thread after
the writer leaves the segment and awaited before it comes back). Recovery
reads the run of valid, consecutive records from the start of each segment
(a torn record, zeros or an older record from the segment's last use end
it) and replays the newest run, preceded by the other segment's run when
that one ends just before it. Replaying ops the engine already has is
harmless: every op is a blind put or delete and they are replayed in order
up to the newest, so every key ends with its last value.

A batch larger than max_logged_bytes (or than an empty segment) is not
logged: the log makes everything before it durable in the engine, starts a
fresh run (one seq skipped, so recovery cannot join it to what came before)
and the engine writes the batch with its own sync. What the log saves is a
sync's fixed cost; a batch of many megabytes costs its bytes, and logging
it would write them twice.
"""
from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Callable, Sequence, overload

from engines.timings import DurationHistogram

log = logging.getLogger(__name__)

Op = tuple[bytes, bytes | None]

SEGMENT_NAMES = ("brain-wal.0", "brain-wal.1")
DEFAULT_SEGMENT_SIZE = 64 << 20
DEFAULT_MAX_LOGGED_BYTES = 8 << 20
# segments grow ahead of the writer in zero-filled chunks, so a new engine
# does not write the whole log up front
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)

_HEADER = struct.Struct("<IIQ")
_LENGTH_SEQ = struct.Struct("<IQ")  # the header after its crc
_CRC = struct.Struct("<I")
_LENGTHS = struct.Struct("<II")
_COUNT = struct.Struct("<I")
_DELETE = 0xFFFFFFFF
_LIMIT_CHECK_EVERY = 1024  # ops encoded between two checks of the length


@overload
def encode_ops(ops: Sequence[Op]) -> bytearray: ...
@overload
def encode_ops(ops: Sequence[Op], limit: int) -> bytearray | None: ...
def encode_ops(ops: Sequence[Op], limit: int | None = None) -> bytearray | None:
    """The log's encoding of a batch's ops; None, found early, when it would
    be longer than limit bytes (a batch too big for a segment is not logged,
    so encoding the whole of it would be wasted)."""
    # into a bytearray, not a list of parts joined: a list of millions of
    # parts is a young container the garbage collector walks at every
    # collection while it is being built (a revoke's batch took 137 ms)
    out = bytearray(_COUNT.pack(len(ops)))
    pack = _LENGTHS.pack
    for i in range(0, len(ops), _LIMIT_CHECK_EVERY):
        if limit is not None and len(out) > limit:
            return None
        for key, value in ops[i : i + _LIMIT_CHECK_EVERY]:
            if value is None:
                out += pack(len(key), _DELETE)
                out += key
            else:
                out += pack(len(key), len(value))
                out += key
                out += value
    return None if limit is not None and len(out) > limit else out


def decode_ops(payload: bytes) -> list[Op]:
    (n,) = _COUNT.unpack_from(payload, 0)
    i = _COUNT.size
    ops: list[Op] = []
    for _ in range(n):
        klen, vlen = _LENGTHS.unpack_from(payload, i)
        i += _LENGTHS.size
        key = payload[i : i + klen]
        i += klen
        if vlen == _DELETE:
            ops.append((key, None))
        else:
            ops.append((key, payload[i : i + vlen]))
            i += vlen
    if i != len(payload):
        raise ValueError(f"write-ahead log payload has {len(payload) - i} bytes after its {n} ops")
    return ops


def _record(seq: int, payload: bytes | bytearray) -> list[bytes | bytearray]:
    """A record as the pieces to write (no copy of the payload); the crc
    covers everything after itself: length, seq and payload."""
    length_seq = _LENGTH_SEQ.pack(len(payload), seq)
    return [_CRC.pack(zlib.crc32(payload, zlib.crc32(length_seq))), length_seq, payload]


@dataclass
class Record:
    seq: int
    offset: int
    payload: bytes


def read_run(data: bytes) -> list[Record]:
    """The valid records with consecutive seqs from the start of a segment."""
    run: list[Record] = []
    off = 0
    end = len(data)
    while off + _HEADER.size <= end:
        crc, length, seq = _HEADER.unpack_from(data, off)
        stop = off + _HEADER.size + length
        if length == 0 or stop > end or seq == 0:
            break
        if zlib.crc32(memoryview(data)[off + 4 : stop]) != crc:
            break
        if run and seq != run[-1].seq + 1:
            break
        run.append(Record(seq, off, data[off + _HEADER.size : stop]))
        off = stop
    return run


def records_to_replay(runs: Sequence[list[Record]]) -> list[Record]:
    """From the two segments' runs: the newest run, joined by the other when
    that one ends just before it."""
    a, b = runs
    if not a or not b:
        return list(a or b)
    newer, older = (a, b) if a[-1].seq > b[-1].seq else (b, a)
    if older[-1].seq + 1 == newer[0].seq:
        return older + newer
    return list(newer)


class WriteAheadLog:
    """The log of one engine directory. Not thread-safe: the engine calls
    append/undo/close under its write lock."""

    def __init__(
        self,
        directory: str,
        checkpoint: Callable[[], None],
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        fsync_durations: DurationHistogram | None = None,
        max_logged_bytes: int = DEFAULT_MAX_LOGGED_BYTES,
    ) -> None:
        if segment_size < 4096:
            raise ValueError(f"write-ahead log segments must be at least 4096 bytes, not {segment_size}")
        self.directory = directory
        self.segment_size = segment_size
        # the longest payload logged
        self._max_payload = min(max_logged_bytes, segment_size - _HEADER.size)
        self._checkpoint = checkpoint
        self._fds: list[int] = []
        self._sizes: list[int] = []
        for name in SEGMENT_NAMES:
            fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds.append(fd)
            self._sizes.append(os.fstat(fd).st_size)
        self._seg = 0
        self._pos = 0
        self._seq = 1
        # the checkpoint that must finish before the writer reuses segment i
        self._pending: list[Future[None] | None] = [None, None]
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-checkpoint")
        self.checkpoints = 0
        self.unlogged = 0  # batches too large to log, written with the engine's own sync
        # the appends' fdatasyncs (etcd_disk_wal_fsync_duration_seconds)
        self.fsync_durations = fsync_durations if fsync_durations is not None else DurationHistogram()

    # -- recovery ----------------------------------------------------------

    def recover(self) -> list[list[Op]]:
        """The batches to apply to the engine, oldest first. The caller
        applies them, makes them durable and then calls start()."""
        # whole files: a segment written with a larger segment_size than
        # this open's holds records past this one's
        runs = [read_run(os.pread(fd, size, 0)) for fd, size in zip(self._fds, self._sizes)]
        last = max((run[-1].seq for run in runs if run), default=0)
        self._seq = last + 1
        replay = records_to_replay(runs)
        if replay:
            log.info("write-ahead log: replaying %d batches (seq %d to %d)", len(replay), replay[0].seq, replay[-1].seq)
        return [decode_ops(r.payload) for r in replay]

    def start(self) -> None:
        """Begin writing at the start of segment 0. Everything the log held
        is durable in the engine by now, so both segments are free."""
        self._seg, self._pos = 0, 0

    # -- writing -----------------------------------------------------------

    def append(self, ops: Sequence[Op], sync: bool) -> tuple[int, int, int] | None:
        """Log a batch before the engine applies it; with sync, return once it
        is on disk. Returns a mark for undo(), or None when the batch is too
        large to log: everything before it is then durable in the engine,
        and the caller must write the batch with the engine's own sync."""
        payload = encode_ops(ops, self._max_payload)
        if payload is None:
            self._fresh_run()
            self.unlogged += 1
            return None
        length = _HEADER.size + len(payload)
        if self._pos + length > self.segment_size:
            self._switch()
        mark = (self._seg, self._pos, self._seq)
        self._write(_record(self._seq, payload), sync)
        self._seq += 1
        return mark

    def undo(self, mark: tuple[int, int, int]) -> None:
        """Take back the last record (the engine failed to apply its batch):
        zero its header, so recovery stops before it, and write there next."""
        seg, pos, seq = mark
        os.pwrite(self._fds[seg], bytes(_HEADER.size), pos)
        os.fdatasync(self._fds[seg])
        self._seg, self._pos, self._seq = seg, pos, seq

    def _write(self, record: list[bytes | bytearray], sync: bool) -> None:
        fd = self._fds[self._seg]
        end = self._pos + _HEADER.size + len(record[2])
        if end > self._sizes[self._seg]:
            self._grow(end)
        if os.pwritev(fd, record, self._pos) != end - self._pos:  # a full disk
            raise OSError(errno.ENOSPC, f"short write to the write-ahead log in {self.directory}")
        self._pos = end
        if sync:
            t0 = perf_counter()
            os.fdatasync(fd)
            self.fsync_durations.observe(perf_counter() - t0)

    def _grow(self, end: int) -> None:
        # zeros ahead of the writer: a sync of data written over them needs
        # no journal commit (the file's size does not change)
        seg = self._seg
        size = self._sizes[seg]
        target = min(self.segment_size, max(end, size + _CHUNK))
        fd = self._fds[seg]
        while size < target:
            n = min(_CHUNK, target - size)
            os.pwrite(fd, _ZEROS if n == _CHUNK else bytes(n), size)
            size += n
        self._sizes[seg] = size

    def _switch(self) -> None:
        """Move to the other segment: wait until its records are durable in
        the engine, and start making this one's durable."""
        other = self._seg ^ 1
        self._wait(other)
        self._pending[self._seg] = self._thread.submit(self._run_checkpoint)
        self._seg, self._pos = other, 0

    def _fresh_run(self) -> None:
        """Make everything logged durable in the engine, then start a run at
        the start of the other segment that recovery cannot join to the
        current one: a record with no ops, one seq skipped."""
        for seg in (0, 1):
            self._wait(seg)
        self._run_checkpoint()
        self._seg, self._pos = self._seg ^ 1, 0
        self._seq += 1
        self._write_barrier()

    def _write_barrier(self) -> None:
        self._write(_record(self._seq, _COUNT.pack(0)), True)
        self._seq += 1

    def _wait(self, seg: int) -> None:
        pending, self._pending[seg] = self._pending[seg], None
        if pending is not None:
            pending.result()

    def _run_checkpoint(self) -> None:
        self._checkpoint()
        self.checkpoints += 1

    def close(self) -> None:
        """Make everything logged durable in the engine and start a fresh
        run, so the next open has nothing to replay. If that fails, the log
        is left as it is and the next open replays it."""
        try:
            self._fresh_run()
        except Exception as e:
            log.warning("write-ahead log: checkpoint failed at close: %s", e)
            for seg in (0, 1):
                try:
                    self._wait(seg)
                except Exception as e2:
                    log.warning("write-ahead log: checkpoint failed at close: %s", e2)
        self._thread.shutdown(wait=True)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
