"""A data directory from a snapshot file, and what a snapshot file holds."""
from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from typing import Callable

from brain.snapshot.format import SnapshotError, SnapshotMeta, read_records, verify
from engines import open_engine
from engines.base import WriteBatch


@dataclass
class SnapshotStatus:
    meta: SnapshotMeta
    size: int
    sha256: str


def _digest_of(f, size: int) -> str:
    f.seek(size - 32)
    return f.read(32).hex()


def status(path: str) -> SnapshotStatus:
    """Check the file's checksum and read its metadata."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        verify(f, size)
        meta: SnapshotMeta | None = None
        for item in read_records(f, batch=65536):
            if isinstance(item, SnapshotMeta):
                meta = item
        assert meta is not None  # read_records ends with the metadata or raises
        return SnapshotStatus(meta, size, _digest_of(f, size))


def restore(path: str, data_dir: str, engine: str = "leveldb", progress: Callable[[int], None] | None = None) -> SnapshotStatus:
    """Build data_dir from the snapshot at path. A damaged file or an existing
    data_dir is refused before anything is written; the directory appears
    only once complete (built beside it, then renamed)."""
    target = os.path.abspath(data_dir)
    if os.path.exists(target):
        raise SnapshotError(f"data dir {data_dir} already exists: restore into a new directory")
    partial = target + ".restoring"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        verify(f, size)
        if os.path.exists(partial):  # left by an interrupted restore
            shutil.rmtree(partial)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        meta = asyncio.run(_write(f, partial, engine, progress))
        digest = _digest_of(f, size)
    os.rename(partial, target)
    _fsync_dir(os.path.dirname(target))
    return SnapshotStatus(meta, size, digest)


async def _write(f, data_dir: str, engine_name: str, progress: Callable[[int], None] | None) -> SnapshotMeta:
    # a restore that stops half way leaves a directory that is deleted, never
    # served: it needs no write-ahead log, only the final sync and close
    options = {"write_ahead_log": False} if engine_name == "leveldb" else {}
    engine = open_engine(engine_name, data_dir=data_dir, **options)
    done = 0
    try:
        for item in read_records(f):
            if isinstance(item, SnapshotMeta):
                # one synced write at the end makes everything before it durable
                await engine.write(WriteBatch(), sync=True)
                return item
            batch = WriteBatch()
            batch.ops.extend(item)
            await engine.write(batch, sync=False)
            done += len(item)
            if progress is not None:
                progress(done)
    finally:
        await engine.close()
    raise SnapshotError("snapshot has no metadata")  # unreachable: read_records raises first


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
