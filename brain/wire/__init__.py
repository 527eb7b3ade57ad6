"""Protobuf wire encoding by hand, for responses assembled by concatenation.

Where a response is mostly serialized KeyValues that the store already holds
(Range pages, watch events), or so small that building a message costs more
than its bytes (the one-key Txns' answers), brain frames bytes with a tag and
a length instead of building message objects: protobuf's wire format is a
sequence of (tag, length, bytes), so concatenation is a valid encoding.

Every hand-encoded byte of brain comes from this package: the primitives
here (no generated code, so the HTTP/2 layer can use varint alone), the
field tags in tags.py (read from the generated messages' descriptors), and
the responses put together from them in responses.py. The byte-equality
tests (tests/test_range_bytes.py, test_single_key.py, test_bulk_puts.py,
test_watch_hub.py) hold each beside what SerializeToString gives.
"""
from __future__ import annotations

from dataclasses import dataclass

_SMALL = [bytes((i,)) for i in range(0x80)]


# wire types: how the bytes after a tag are read
VARINT = 0
LEN = 2  # length-delimited: a message, bytes or a string


def varint(n: int) -> bytes:
    """Protobuf base-128 varint; negative numbers as their 64-bit two's complement."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field's key on the wire: its number and wire type, as a varint."""
    return varint(number << 3 | wire_type)


def int_field(tag: bytes, n: int) -> bytes:
    """A varint field, left out when zero as proto3 does."""
    return tag + varint(n) if n else b""


def bytes_field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field (a message, bytes or string): tag, length, body."""
    return tag + varint(len(body)) + body


class LengthPrefixes:
    """tag + varint(length) for one length-delimited field, precomputed for
    lengths up to `upto`: framing a page of 500 KeyValues is then a list
    lookup per value instead of a varint encoding."""

    __slots__ = ("tag", "_table")

    def __init__(self, tag: bytes, upto: int = 1 << 14) -> None:
        self.tag = tag
        self._table = [tag + varint(n) for n in range(upto)]

    def frame(self, values: list[bytes]) -> list[bytes]:
        """[prefix, value, prefix, value, ...] for b"".join."""
        table, upto, tag = self._table, len(self._table), self.tag
        out: list[bytes] = []
        add = out.append
        for v in values:
            n = len(v)
            add(table[n] if n < upto else tag + varint(n))
            add(v)
        return out

    def pieces(self, head: bytes, values: list[bytes], tail: bytes, per_piece: int) -> Pieces:
        """head, every value framed, then tail, as Pieces of per_piece values
        each. Meant for a thread: each join holds the GIL only briefly."""
        parts = [head]
        frame = self.frame
        for i in range(0, len(values), per_piece):
            parts.append(b"".join(frame(values[i : i + per_piece])))
        parts.append(tail)
        return Pieces(parts, sum(map(len, parts)))


@dataclass(frozen=True, slots=True)
class Pieces:
    """A serialized message in pieces, in order: a large response handed to
    the transport without being joined into one buffer (the join of a
    whole-range list would hold the event loop, and double its memory)."""

    parts: list[bytes]
    size: int

    def join(self) -> bytes:
        return b"".join(self.parts)
