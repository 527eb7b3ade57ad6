"""Records the store writes, put together from bytes: a delete's tombstone,
{key, mod_revision}, the bytes SerializeToString gives for that KeyValue
(fields in number order, proto3 defaults left out). A DeleteRange of a
whole prefix makes one per key."""
from __future__ import annotations

from brain.wire import bytes_field, varint
from brain.wire.tags import KEY_VALUE_KEY, KEY_VALUE_MOD_REVISION


def tombstone_suffix(rev: int) -> bytes:
    """The part of every tombstone at revision rev after its key."""
    return KEY_VALUE_MOD_REVISION + varint(rev) if rev else b""


def tombstone(key: bytes, suffix: bytes) -> bytes:
    """The tombstone of key, suffix from tombstone_suffix(rev)."""
    return bytes_field(KEY_VALUE_KEY, key) + suffix if key else suffix
