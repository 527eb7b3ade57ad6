"""One change as a watch event, pre-encoded for the wire.

A WatchResponse is sent to every matching watcher, so an event is encoded
once and its bytes are shared by every response that carries it. Responses
are assembled by concatenation (protobuf's wire format allows it: a repeated
message field is a sequence of tag, length, bytes), never by building and
serializing message objects per watcher.

The serialized KeyValues (kv, prev) are kept as they came from the store; an
event holds only the few header bytes that frame them, so an event costs no
copy of its values, in history or in flight.
"""
from __future__ import annotations

from brain.wire import varint

# Wire tags (field number << 3 | wire type) of the messages watch builds.
TAG_EVENT_TYPE = 0x08  # Event.type = 1, varint
TAG_EVENT_KV = 0x12  # Event.kv = 2, bytes
TAG_EVENT_PREV_KV = 0x1A  # Event.prev_kv = 3, bytes
TAG_RESPONSE_HEADER = 0x0A  # WatchResponse.header = 1
TAG_RESPONSE_WATCH_ID = 0x10  # WatchResponse.watch_id = 2, varint
TAG_RESPONSE_FRAGMENT = 0x38  # WatchResponse.fragment = 7, varint
TAG_RESPONSE_EVENT = 0x5A  # WatchResponse.events = 11, bytes

_DELETE_TYPE = bytes((TAG_EVENT_TYPE, 1))  # mvccpb.DELETE; PUT (0) is left out
_EVENT_KV = bytes((TAG_EVENT_KV,))
_EVENT_PREV_KV = bytes((TAG_EVENT_PREV_KV,))
_RESPONSE_EVENT = bytes((TAG_RESPONSE_EVENT,))


class WatchEvent:
    """A PUT or DELETE of one key at one revision, as WatchResponse.events
    bytes: `head + kv` without prev_kv, `head_prev + kv + prev_head + prev`
    with it (only when the key had a live previous version)."""

    __slots__ = ("rev", "key", "kv", "prev", "deleted", "head", "head_prev", "prev_head", "size")

    def __init__(self, rev: int, key: bytes, kv: bytes, prev: bytes | None, deleted: bool) -> None:
        self.rev = rev
        self.key = key
        self.kv = kv
        self.prev = prev
        self.deleted = deleted
        n = len(kv)
        kv_head = (_DELETE_TYPE + _EVENT_KV if deleted else _EVENT_KV) + varint(n)
        inner = len(kv_head) + n
        self.head = _RESPONSE_EVENT + varint(inner) + kv_head
        if prev is None:
            self.head_prev = self.head
            self.prev_head = b""
            self.size = len(self.head) + n
        else:
            m = len(prev)
            self.prev_head = _EVENT_PREV_KV + varint(m)
            self.head_prev = _RESPONSE_EVENT + varint(inner + len(self.prev_head) + m) + kv_head
            self.size = len(self.head_prev) + n + len(self.prev_head) + m

    @property
    def created(self) -> bool:
        """etcd's IsCreateEvent: a PUT of a key that had no live version."""
        return not self.deleted and self.prev is None

    def frame(self, with_prev: bool) -> bytes:
        """This event's bytes as one WatchResponse.events entry."""
        if with_prev and self.prev is not None:
            return b"".join((self.head_prev, self.kv, self.prev_head, self.prev))
        return self.head + self.kv

    def memory(self) -> int:
        """Approximate bytes this event holds (values plus object overhead)."""
        return self.size + 200

    def __repr__(self) -> str:
        kind = "DELETE" if self.deleted else "PUT"
        return f"WatchEvent({kind} {self.key!r} @{self.rev})"
