"""How MVCC state is laid out in the engine's single ordered keyspace, and
the one place its records are encoded and decoded: the rest of brain calls
the functions here rather than reading prefixes, markers or revisions itself.

Every engine key starts with a one-byte namespace:

  k<user key>                 -> latest live version of the key (serialized
                                 mvccpb.KeyValue). The "latest index": reads at
                                 the current revision scan only this, never
                                 history. Deleted keys have no entry.
  r<esc(user key)><rev:8>     -> the version written at rev: a KeyValue, a
                                 tombstone (version == 0), or LIVE (empty)
                                 while it is the key's live version. History,
                                 for reads at past revisions; compaction
                                 prunes it.
  e<rev:8>                    -> the user keys changed at rev, in change
                                 order. Lets watches replay from the engine and
                                 lets compaction find what to prune without a
                                 full scan.
  x<user key>                 -> empty: the key is live. The key set alone,
                                 without values, so that an open reads the
                                 keys for the key index (key_index.py) without
                                 reading every value.
  y<lease id:8><user key>     -> empty: the live key is attached to the lease,
                                 so that an open reads only leased keys.
  m<name>                     -> metadata (current revision, compaction).
  l<lease id:8>               -> a lease (see brain/lease).

A live version is stored once, in the index: its history record is the
empty LIVE marker, and the write that replaces or deletes it rewrites that
record with the full KeyValue (in the same atomic batch). Creates thus put
one copy of each value into the engine instead of two, which halves what
LevelDB compacts under a create load.

User keys are arbitrary bytes. In the history namespace a revision follows
the key, so the key is escaped (0x00 -> 0x00 0xff, then a 0x00 0x01
terminator): this keeps the byte order of user keys and makes no escaped key
a prefix of another, so all versions of one key sort together, oldest first.
"""
from __future__ import annotations

import struct
from typing import Sequence

from brain.etcdpb import kv_pb2
from brain.mvcc.kv import Change
from brain.wire.stored import tombstone, tombstone_suffix
from engines.base import Snapshot, WriteBatch

_parse_kv = kv_pb2.KeyValue.FromString

INDEX = b"k"
INDEX_END = b"l"
HISTORY = b"r"
HISTORY_END = b"s"
EVENTS = b"e"
EVENTS_END = b"f"
LEASE = b"l"
LEASE_END = b"m"
KEYSET = b"x"
KEYSET_END = b"y"
LEASED = b"y"
LEASED_END = b"z"

# the history value of a key's live version (see above); no KeyValue
# serializes to it, since every stored version has a key
LIVE = b""

META_REVISION = b"mrev"
META_COMPACT_SCHEDULED = b"mcompact-scheduled"
META_COMPACT_FINISHED = b"mcompact-finished"
META_CLUSTER_ID = b"mcluster-id"
# present once the key set and leased-key records cover every live key
# (stores written before they existed get them at their first open)
META_KEYSET = b"mkeyset"
# the active alarms (brain/server/alarms.py), an AlarmResponse's alarms
META_ALARMS = b"malarms"
# several brain processes on one engine (brain/cluster): the leader's lease
# record, the fencing term every leader commit checks, and one record per
# member under the prefix (<prefix><member id:016x>)
META_LEADER = b"mleader"
META_LEADER_TERM = b"mleader-term"
META_MEMBER_PREFIX = b"mmember/"

_REV = struct.Struct(">Q")
_KEY_LENGTH = struct.Struct(">I")
pack_rev = _REV.pack
unpack_rev = _REV.unpack

# the revision of a store without a META_REVISION record (a fresh one)
FRESH_REVISION = 1


def decode_rev(raw: bytes | None, absent: int = 0) -> int:
    """A revision stored in a metadata record; absent if there is none."""
    return _REV.unpack(raw)[0] if raw else absent


def index_key(key: bytes) -> bytes:
    return INDEX + key


def index_user_key(engine_key: bytes) -> bytes:
    return engine_key[1:]


def index_range(key: bytes, end: bytes | None) -> tuple[bytes, bytes]:
    """Engine range for user keys [key, end); end None means no upper bound."""
    return INDEX + key, (INDEX_END if end is None else INDEX + end)


def escape(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def unescape(escaped: bytes) -> bytes:
    # escaped ends with the 0x00 0x01 terminator
    return escaped[:-2].replace(b"\x00\xff", b"\x00")


def history_key(key: bytes, rev: int) -> bytes:
    return HISTORY + escape(key) + _REV.pack(rev)


def history_prefix(key: bytes) -> bytes:
    return HISTORY + escape(key)


def history_range(key: bytes, end: bytes | None) -> tuple[bytes, bytes]:
    return HISTORY + escape(key), (HISTORY_END if end is None else HISTORY + escape(end))


def history_upto(key: bytes, rev: int) -> tuple[bytes, bytes]:
    """Engine range of key's versions at or below rev."""
    prefix = HISTORY + escape(key)
    return prefix, prefix + _REV.pack(rev + 1)


def history_key_rev(engine_key: bytes) -> int:
    """The revision of a history record's key."""
    return _REV.unpack(engine_key[-8:])[0]


def history_key_prefix(engine_key: bytes) -> bytes:
    """The part of a history record's key shared by all versions of its user key."""
    return engine_key[:-8]


def history_prefix_user_key(prefix: bytes) -> bytes:
    """The user key of a history_key_prefix."""
    return unescape(prefix[1:])


def history_user_key(engine_key: bytes) -> bytes:
    return unescape(engine_key[1:-8])


def events_key(rev: int) -> bytes:
    return EVENTS + _REV.pack(rev)


def events_range(lo: int, hi: int) -> tuple[bytes, bytes]:
    """Engine range of the revision log records of revisions lo..hi."""
    return EVENTS + _REV.pack(lo), EVENTS + _REV.pack(hi + 1)


def events_key_rev(engine_key: bytes) -> int:
    return _REV.unpack(engine_key[1:])[0]


def decode_events(logs: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, bytes]]:
    """(revision, user key) of every change in revision log records, in order."""
    out: list[tuple[int, bytes]] = []
    for ek, data in logs:
        rev = _REV.unpack(ek[1:])[0]
        out.extend((rev, k) for k in decode_key_list(data))
    return out


def keyset_key(key: bytes) -> bytes:
    return KEYSET + key


def keyset_range(key: bytes, end: bytes) -> tuple[bytes, bytes]:
    """Engine range of the key set records of user keys [key, end); end
    b"" means no upper bound."""
    return KEYSET + key, (KEYSET_END if end == b"" else KEYSET + end)


def keyset_user_key(engine_key: bytes) -> bytes:
    return engine_key[1:]


def leased_key(lease_id: int, key: bytes) -> bytes:
    return LEASED + _REV.pack(lease_id & 0xFFFFFFFFFFFFFFFF) + key


def decode_leased(engine_key: bytes) -> tuple[int, bytes]:
    """(lease id, user key) of a leased-key record."""
    lease = _REV.unpack_from(engine_key, 1)[0]
    if lease >= 1 << 63:
        lease -= 1 << 64
    return lease, engine_key[9:]


async def read_leased(snap: Snapshot) -> list[bytes]:
    """Every leased-key record's engine key (decode_leased: its lease id and
    user key)."""
    return [k for k, _ in await snap.scan(LEASED, LEASED_END, keys_only=True)]


def lease_key(lease_id: int) -> bytes:
    return LEASE + _REV.pack(lease_id & 0xFFFFFFFFFFFFFFFF)


def encode_key_list(keys: Sequence[bytes]) -> bytearray:
    """Keys, each after its length; lists encoded one after another are the
    encoding of the keys of all of them."""
    out = bytearray()
    pack = _KEY_LENGTH.pack
    for k in keys:
        out += pack(len(k))
        out += k
    return out


def decode_key_list(data: bytes) -> list[bytes]:
    out = []
    i = 0
    n = len(data)
    while i < n:
        (ln,) = struct.unpack_from(">I", data, i)
        i += 4
        out.append(data[i : i + ln])
        i += ln
    return out


# -- stored versions ---------------------------------------------------------


def is_live_marker(raw: bytes | None) -> bool:
    """Whether a history record is the LIVE marker: the version is the
    key's live one, stored in the index."""
    return raw == LIVE


def is_tombstone(raw: bytes) -> bool:
    """Whether a stored version is a delete's tombstone (version 0). The
    LIVE marker is not: it stands for a live version."""
    return raw != LIVE and _parse_kv(raw).version == 0


def encode_tombstone(key: bytes, rev: int) -> bytes:
    """The version a delete of key at rev stores: {key, mod_revision}
    (many keys at one revision: wire.stored.tombstone)."""
    return tombstone(key, tombstone_suffix(rev))


async def read_live(snap: Snapshot, keys: list[bytes]) -> list[bytes | None]:
    """The live versions of user keys (their index records): what LIVE
    markers in their history stand for."""
    return await snap.batch_get([INDEX + k for k in keys])


async def read_version_at(snap: Snapshot, key: bytes, rev: int) -> bytes | None:
    """The serialized KeyValue of key live at rev, from its history (None:
    not live at rev)."""
    start, stop = history_upto(key, rev)
    items = await snap.scan(start, stop, limit=1, reverse=True)
    if not items:
        return None
    raw = items[0][1]
    if raw == LIVE:  # still the live version at this snapshot: stored in the index
        return await snap.get(INDEX + key)
    return None if is_tombstone(raw) else raw


# -- a commit's records ------------------------------------------------------


def encode_batch(changes: Sequence[Change], rev: int, events: bool = True) -> WriteBatch:
    """The engine writes for a batch of changes ending at revision rev.
    Without events, no revision log records: for versions imported at or
    below the compact revision, which no watch replays and compaction skips."""
    wb = WriteBatch()
    by_rev: dict[int, list[bytes]] = {}
    encode_changes(wb, by_rev, changes)
    end_batch(wb, by_rev, rev, events)
    return wb


def encode_changes(
    wb: WriteBatch, by_rev: dict[int, list[bytes]], changes: Sequence[Change],
    copies: list[tuple[bytes, bytes | None]] | None = None, committed: int = 0,
) -> None:
    """The records of changes, added to wb (a batch may be encoded a part at
    a time, in order; end_batch closes it).

    copies: where the copies of replaced versions committed at or below
    revision committed go instead of wb, to be written ahead of it
    (brain/mvcc/copy_ahead.py); a change whose copy is taken already
    (copied) makes none there. Without copies, every copy goes into wb."""
    put = wb.ops.append
    copy = put if copies is None else copies.append
    pack = _REV.pack
    for c in changes:
        key = c.key
        history = history_prefix(key)  # escaped once for both records
        if c.prev is not None:
            # the replaced version leaves the index: its history record
            # takes the full KeyValue (see above)
            if c.prev_rev > committed:
                put((history + pack(c.prev_rev), c.prev))
            elif not c.copied:
                copy((history + pack(c.prev_rev), c.prev))
            if c.prev_lease and (c.deleted or c.lease != c.prev_lease):
                put((leased_key(c.prev_lease, key), None))
        else:
            put((KEYSET + key, b""))
        if c.deleted:
            put((INDEX + key, None))
            put((history + pack(c.rev), c.kv))
            put((KEYSET + key, None))
        else:
            put((INDEX + key, c.kv))
            put((history + pack(c.rev), LIVE))
            if c.lease and c.lease != c.prev_lease:
                put((leased_key(c.lease, key), b""))
        by_rev.setdefault(c.rev, []).append(key)


def end_batch(wb: WriteBatch, by_rev: dict[int, list[bytes]], rev: int, events: bool = True) -> None:
    """The revision log records of the changes encoded, and the store's
    revision."""
    end_batch_encoded(wb, {r: encode_key_list(ks) for r, ks in by_rev.items()} if events else {}, rev)


def end_batch_encoded(wb: WriteBatch, key_lists: dict[int, bytearray], rev: int) -> None:
    """end_batch, with each revision's keys already encoded (encode_key_list):
    a batch of very many keys encodes them a part at a time."""
    put = wb.ops.append
    for r, encoded in key_lists.items():
        put((events_key(r), bytes(encoded)))
    put((META_REVISION, pack_rev(rev)))
