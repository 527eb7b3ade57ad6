"""brain's snapshot file: every engine record of the store at one point in
time, with a checksum.

Layout:

  MAGIC (16 bytes), then FORMAT_VERSION (u32)
  records:  klen (u32) vlen (u32) key value      -- klen < END_MARK
  END_MARK (u32), mlen (u32), metadata (JSON, mlen bytes)
  zero bytes up to a multiple of 512
  sha256 of everything above (32 bytes)

The records are the engine's own (brain/mvcc/records.py): live index, history,
events, key set, leases and metadata, cluster identity included, so a
restore gives back the store exactly, revisions and compaction included.

The trailing sha256 after a 512-byte-aligned body is what etcd's snapshot
client checks for (`hasChecksum`: size % 512 == 32), so `etcdctl snapshot
save` accepts the stream; brain checks the digest itself before it restores.

Encoding and decoding are plain functions over bytes (no files, no sockets),
so they are tested directly; brain/snapshot/stream.py and restore.py do the
I/O.
"""
from __future__ import annotations

import hashlib
import json
import struct
from bisect import bisect_left
from dataclasses import asdict, dataclass
from operator import itemgetter
from typing import BinaryIO, Iterator

from brain.mvcc import records as K

MAGIC = b"brain-snapshot\n\x00"
FORMAT_VERSION = 1
END_MARK = 0xFFFFFFFF
ALIGN = 512
DIGEST_SIZE = hashlib.sha256().digest_size

_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_HEAD = MAGIC + _U32.pack(FORMAT_VERSION)


class SnapshotError(Exception):
    """A file that is not a complete, undamaged brain snapshot."""


@dataclass
class SnapshotMeta:
    """What a snapshot holds, written at its end and printed by `status`."""

    revision: int = 0
    compact_revision: int = 0
    keys: int = 0
    leases: int = 0
    records: int = 0
    record_bytes: int = 0
    format: str = "brain-snapshot"
    format_version: int = FORMAT_VERSION
    server_version: str = ""
    created: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotMeta:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise SnapshotError(f"snapshot metadata is not JSON: {e}") from None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


_first = itemgetter(0)


def _run_length(pairs: list[tuple[bytes, bytes]], start: bytes, end: bytes) -> int:
    return bisect_left(pairs, end, key=_first) - bisect_left(pairs, start, key=_first)


class SnapshotEncoder:
    """Turns batches of engine records into snapshot bytes, counting what
    the metadata reports and hashing as it goes."""

    def __init__(self, server_version: str = "", created: str = "") -> None:
        self.meta = SnapshotMeta(server_version=server_version, created=created)
        self._sha = hashlib.sha256()
        self._size = 0

    def _out(self, data: bytes) -> bytes:
        self._sha.update(data)
        self._size += len(data)
        return data

    def header(self) -> bytes:
        return self._out(_HEAD)

    def records(self, pairs: list[tuple[bytes, bytes]]) -> bytes:
        """pairs: engine records in key order (a page of a scan)."""
        meta = self.meta
        parts: list[bytes] = []
        extend = parts.extend
        pack = _PAIR.pack
        size = 0
        for key, value in pairs:
            extend((pack(len(key), len(value)), key, value))
            size += len(key) + len(value)
        # the page is sorted: each namespace is one run, counted by bisection
        meta.keys += _run_length(pairs, K.INDEX, K.INDEX_END)
        meta.leases += _run_length(pairs, K.LEASE, K.LEASE_END)
        lo = bisect_left(pairs, b"m", key=_first)
        for key, value in pairs[lo : bisect_left(pairs, b"n", key=_first)]:
            if key == K.META_REVISION:
                meta.revision = K.decode_rev(value)
            elif key == K.META_COMPACT_SCHEDULED:
                meta.compact_revision = K.decode_rev(value)
        meta.records += len(pairs)
        meta.record_bytes += size
        return self._out(b"".join(parts))

    def finish(self) -> bytes:
        """The end mark, the metadata, the padding and the digest."""
        if self.meta.revision == 0:
            self.meta.revision = 1  # a store never written to is at revision 1
        raw = self.meta.to_json()
        tail = _U32.pack(END_MARK) + _U32.pack(len(raw)) + raw
        pad = -(self._size + len(tail)) % ALIGN
        body = self._out(tail + bytes(pad))
        return body + self._sha.digest()


def verify(f: BinaryIO, size: int, block: int = 1 << 20) -> None:
    """Raise SnapshotError unless the open file f of size bytes ends with the
    sha256 of what precedes it."""
    if size < len(_HEAD) + DIGEST_SIZE or size % ALIGN != DIGEST_SIZE:
        raise SnapshotError(f"not a complete snapshot: {size} bytes (a damaged or truncated file)")
    sha = hashlib.sha256()
    left = size - DIGEST_SIZE
    f.seek(0)
    while left:
        chunk = f.read(min(block, left))
        if not chunk:
            raise SnapshotError("snapshot file shrank while being read")
        sha.update(chunk)
        left -= len(chunk)
    if f.read(DIGEST_SIZE) != sha.digest():
        raise SnapshotError("snapshot checksum mismatch: the file is damaged")


def read_records(f: BinaryIO, batch: int = 4096, block: int = 4 << 20, batch_bytes: int = 8 << 20) -> Iterator[list[tuple[bytes, bytes]] | SnapshotMeta]:
    """The records of a verified snapshot file in batches, then its metadata
    (the last item). Parsed from large blocks rather than read record by
    record: a restore spends most of its time here. A batch ends at `batch`
    records or `batch_bytes` of them, whichever comes first."""
    f.seek(0)
    head = f.read(len(_HEAD))
    if head[: len(MAGIC)] != MAGIC:
        raise SnapshotError("not a brain snapshot (bad magic); an etcd snapshot is restored with etcdutl, then migrated")
    (version,) = _U32.unpack(head[len(MAGIC) :])
    if version != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format {version} is not supported (this brain reads format {FORMAT_VERSION})")
    out: list[tuple[bytes, bytes]] = []
    out_bytes = 0
    unpack_from = _PAIR.unpack_from
    buf = b""
    pos = 0
    while True:
        if len(buf) - pos < 8:
            more = f.read(block)
            if not more:
                raise SnapshotError("snapshot ends inside its records")
            buf, pos = buf[pos:] + more, 0
            continue
        klen, vlen = unpack_from(buf, pos)
        if klen == END_MARK:
            if out:
                yield out
            raw = buf[pos + 8 : pos + 8 + vlen]
            if len(raw) < vlen:
                raw += f.read(vlen - len(raw))
            if len(raw) < vlen:
                raise SnapshotError("snapshot ends inside its metadata")
            yield SnapshotMeta.from_json(raw)
            return
        end = pos + 8 + klen + vlen
        if end > len(buf):
            more = f.read(max(block, end - len(buf)))
            if not more:
                raise SnapshotError("snapshot ends inside a record")
            buf, pos = buf[pos:] + more, 0
            continue
        k = pos + 8 + klen
        out.append((buf[pos + 8 : k], buf[k:end]))
        out_bytes += end - pos
        pos = end
        if len(out) >= batch or out_bytes >= batch_bytes:
            yield out
            out = []
            out_bytes = 0
