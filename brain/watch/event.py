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
from brain.wire.tags import EVENT_KV, EVENT_PREV_KV, EVENT_TYPE_DELETE, WATCH_RESPONSE_EVENTS

_DELETE_KV = EVENT_TYPE_DELETE + EVENT_KV


# bytes the framing of an event adds to its values, at most: the events
# tag, three lengths of at most 5 bytes, the kv and prev_kv tags, the type
_FRAMING_MAX = 20


class WatchEvent:
    """A PUT or DELETE of one key at one revision, as WatchResponse.events
    bytes: `head + kv` without prev_kv, `head_prev + kv + prev_head + prev`
    with it (only when the key had a live previous version).

    The heads are made the first time the event is sent (`framed`): most
    events are only ever held in the history, and every put makes one."""

    __slots__ = ("rev", "key", "kv", "prev", "deleted", "head", "head_prev", "prev_head", "size")

    def __init__(self, rev: int, key: bytes, kv: bytes, prev: bytes | None, deleted: bool) -> None:
        self.rev = rev
        self.key = key
        self.kv = kv
        self.prev = prev
        self.deleted = deleted
        self.head = b""  # not framed yet
        # an upper bound of the framed size with prev_kv, which bounds the
        # batches of history handed out (history.py)
        self.size = len(kv) + (len(prev) if prev is not None else 0) + _FRAMING_MAX

    def framed(self) -> WatchEvent:
        """This event with its heads made."""
        if self.head:
            return self
        kv, prev = self.kv, self.prev
        n = len(kv)
        # the framing stays here, from brain.wire's tags, rather than in a
        # function of brain/wire: an event is framed per changed key, and a
        # call per key is what this path avoids
        kv_head = (_DELETE_KV if self.deleted else EVENT_KV) + varint(n)
        inner = len(kv_head) + n
        if prev is None:
            self.head_prev = self.prev_head = b""
        else:
            m = len(prev)
            self.prev_head = EVENT_PREV_KV + varint(m)
            self.head_prev = WATCH_RESPONSE_EVENTS + varint(inner + len(self.prev_head) + m) + kv_head
        self.head = WATCH_RESPONSE_EVENTS + varint(inner) + kv_head
        return self

    @property
    def created(self) -> bool:
        """etcd's IsCreateEvent: a PUT of a key that had no live version."""
        return not self.deleted and self.prev is None

    def frame(self, with_prev: bool) -> bytes:
        """This event's bytes as one WatchResponse.events entry."""
        self.framed()
        if with_prev and self.prev is not None:
            return b"".join((self.head_prev, self.kv, self.prev_head, self.prev))
        return self.head + self.kv

    def memory(self) -> int:
        """Approximate bytes this event holds (values plus object overhead)."""
        return self.size + 200

    def __repr__(self) -> str:
        kind = "DELETE" if self.deleted else "PUT"
        return f"WatchEvent({kind} {self.key!r} @{self.rev})"
