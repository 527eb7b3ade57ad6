"""Integrity hashes of the store: HashKV (of the key history a revision can
see) and Hash (of every engine record). Both are brain's own definitions:
their values are comparable between brain servers, not with etcd's.

HashKV at revision R, with C the compact revision (0 when never compacted),
is the CRC-32 (zlib's, the IEEE polynomial) of HASHKV_SEED followed by one
record per key version, keys in byte order and each key's versions oldest
first, of:

  - the version of the key visible at C (its newest version at or below C),
    when the key is live there (a tombstone at or below C is not counted);
  - every version the key was given at a revision in (C, R], tombstones
    (deletes) included.

A record is: key length (u32), key, mod_revision, create_revision, version,
lease (four i64), value length (u32), value; big-endian. A tombstone has
version 0, create_revision 0, lease 0 and an empty value. The record is
built from the KeyValue's fields, not from its stored bytes, so a change in
how a version is serialized leaves the hash alone.

Why this set of versions: it is what a read at any revision in [C, R] can
see. The compactor (compactor.py) removes, at or below C, every version of a
key but its newest, and that one too when it is a tombstone: exactly the
versions not counted. So the hash does not depend on how far physical
compaction has got, only on the history, C and R. Two servers that applied
the same operations (and compactions) agree at every R; a restart changes
nothing; and any difference in a key's value, create or mod revision,
version or lease in that window changes a record.

Hash is the CRC-32 of HASH_SEED followed by every engine record outside the
metadata namespace (which holds the revision counter, compaction progress
and the cluster id), in engine key order, each as key length (u32), key,
value length (u32), value. Like etcd's Hash it is for testing: it covers the
physical layout, so it changes as lazy compaction removes history and is
equal on two servers only once both have compacted as far.

Both walk an engine snapshot a page at a time, yielding to the event loop
between pages, so neither holds the loop however large the store. HashKV
reads the snapshot of the current read view, which pins the revision and
the compact revision for the whole walk; Hash a new snapshot of the engine,
and reports the revision stored in it.
"""
from __future__ import annotations

import asyncio
import struct
import zlib
from dataclasses import dataclass
from typing import AsyncIterator

from brain.mvcc.errors import CompactedError, CorruptError, FutureRevisionError
from brain.etcdpb import kv_pb2
from brain.mvcc import records as K
from brain.mvcc.kv import View
from engines.base import Engine, Snapshot

_parse_kv = kv_pb2.KeyValue.FromString

# The hashes start from these bytes: a later definition takes a new seed, so
# hashes of two definitions never compare equal by accident.
HASHKV_SEED = b"brain-hashkv-v1"
HASH_SEED = b"brain-hash-v1"

# Engine records read and hashed per turn of the event loop.
PAGE = 1024

# the metadata namespace, which Hash leaves out
META = K.META_REVISION[:1]
META_END = bytes([META[0] + 1])

_U32 = struct.Struct(">I")
_META = struct.Struct(">qqqq")


@dataclass(frozen=True, slots=True)
class KVHash:
    hash: int
    revision: int  # the revision hashed (R)
    compact_revision: int  # C; 0 when the store was never compacted


def kv_record(kv: kv_pb2.KeyValue) -> bytes:
    """The bytes one key version contributes to HashKV."""
    return b"".join((
        _U32.pack(len(kv.key)), kv.key,
        _META.pack(kv.mod_revision, kv.create_revision, kv.version, kv.lease),
        _U32.pack(len(kv.value)), kv.value,
    ))


def hash_revision(view: View, rev: int) -> int:
    """The revision HashKV(rev) hashes, by etcd 3.5's rules for it: 0 is the
    view's revision; at or below the compact revision is compacted (unlike a
    range, which may read at the compact revision itself); above the view's
    revision is a future revision."""
    if rev > 0 and rev <= view.compact_rev:
        raise CompactedError()
    if rev > view.rev:
        raise FutureRevisionError()
    return rev if rev > 0 else view.rev


async def _pages(snap: Snapshot, start: bytes, end: bytes | None) -> AsyncIterator[list[tuple[bytes, bytes]]]:
    """The pairs in [start, end) (end None: no upper bound), PAGE at a time,
    a turn of the event loop between pages."""
    while True:
        items = await snap.scan(start, end, limit=PAGE)
        if items:
            yield items
        if len(items) < PAGE:
            return
        start = items[-1][0] + b"\x00"
        await asyncio.sleep(0)


def _live_at_compact(raw: bytes) -> bool:
    """Whether a key's newest version at or below C is live there."""
    return not K.is_tombstone(raw)


async def hash_kv(view: View, rev: int) -> KVHash:
    """HashKV at rev (0: the view's revision); see the module docstring."""
    rev = hash_revision(view, rev)
    compact = view.compact_rev
    snap = view.snapshot
    crc = zlib.crc32(HASHKV_SEED)
    prefix = b""  # the escaped key whose versions are being read
    # the key's newest version at or below compact so far: (engine key, raw)
    at_compact: tuple[bytes, bytes] | None = None
    async for page in _pages(snap, K.HISTORY, K.HISTORY_END):
        counted: list[tuple[bytes, bytes]] = []  # (history key, raw or LIVE), in hash order
        for ek, raw in page:
            p = K.history_key_prefix(ek)
            if p != prefix:
                if at_compact is not None and _live_at_compact(at_compact[1]):
                    counted.append(at_compact)
                at_compact = None
                prefix = p
            r = K.history_key_rev(ek)
            if r > rev:
                continue
            if r <= compact:
                at_compact = (ek, raw)
                continue
            if at_compact is not None:
                if _live_at_compact(at_compact[1]):
                    counted.append(at_compact)
                at_compact = None
            counted.append((ek, raw))
        crc = await _hash_versions(snap, counted, crc)
    if at_compact is not None and _live_at_compact(at_compact[1]):
        crc = await _hash_versions(snap, [at_compact], crc)
    return KVHash(crc, rev, compact)


async def _hash_versions(snap: Snapshot, counted: list[tuple[bytes, bytes]], crc: int) -> int:
    """crc extended by the records of the counted versions. A LIVE history
    record is the key's live version, whose KeyValue is in the index."""
    live = [i for i, (_, raw) in enumerate(counted) if K.is_live_marker(raw)]
    if live:
        found = await K.read_live(snap, [K.history_user_key(counted[i][0]) for i in live])
        for i, raw in zip(live, found):
            if raw is None:  # a LIVE marker always has its index record in the same snapshot
                raise CorruptError()
            counted[i] = (counted[i][0], raw)
    chunk = b"".join(kv_record(_parse_kv(raw)) for _, raw in counted)
    return zlib.crc32(chunk, crc)


async def hash_all(engine: Engine) -> tuple[int, int]:
    """Hash of every engine record but the metadata, and the revision the
    engine held; see the module docstring. From a new engine snapshot rather
    than the current read view's, which predates any physical compaction
    since the last write."""
    snap = engine.snapshot()
    try:
        raw = await snap.get(K.META_REVISION)
        crc = zlib.crc32(HASH_SEED)
        for start, end in ((b"", META), (META_END, None)):
            async for page in _pages(snap, start, end):
                crc = zlib.crc32(b"".join(_U32.pack(len(k)) + k + _U32.pack(len(v)) + v for k, v in page), crc)
    finally:
        snap.close()
    return crc, K.decode_rev(raw, K.FRESH_REVISION)
