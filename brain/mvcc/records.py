"""How MVCC state is laid out in the engine's single ordered keyspace.

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
pack_rev = _REV.pack
unpack_rev = _REV.unpack


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


def events_key(rev: int) -> bytes:
    return EVENTS + _REV.pack(rev)


def leased_key(lease_id: int, key: bytes) -> bytes:
    return LEASED + _REV.pack(lease_id & 0xFFFFFFFFFFFFFFFF) + key


def decode_leased(engine_key: bytes) -> tuple[int, bytes]:
    """(lease id, user key) of a leased-key record."""
    lease = _REV.unpack_from(engine_key, 1)[0]
    if lease >= 1 << 63:
        lease -= 1 << 64
    return lease, engine_key[9:]


def lease_key(lease_id: int) -> bytes:
    return LEASE + _REV.pack(lease_id & 0xFFFFFFFFFFFFFFFF)


def encode_key_list(keys: list[bytes]) -> bytes:
    parts = []
    for k in keys:
        parts.append(struct.pack(">I", len(k)))
        parts.append(k)
    return b"".join(parts)


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
