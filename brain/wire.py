"""Protobuf wire pieces for responses assembled by concatenation.

Where a response is mostly serialized KeyValues that the store already holds
(Range pages, watch events), brain frames those bytes with a tag and a length
instead of building message objects: protobuf's wire format is a sequence of
(tag, length, bytes), so concatenation is a valid encoding.
"""
from __future__ import annotations

from dataclasses import dataclass

_SMALL = [bytes((i,)) for i in range(0x80)]


# Tags of the write responses put together from bytes (rpc.proto):
# TxnResponse header 1, succeeded 2 (true), responses 3; ResponseOp
# response_put 2, response_delete_range 3; PutResponse / DeleteRangeResponse
# header 1; ResponseHeader revision 3; DeleteRangeResponse deleted 2.
TXN_HEADER = b"\x0a"
TXN_SUCCEEDED = b"\x10\x01"
TXN_RESPONSES = b"\x1a"
OP_PUT = b"\x12"
OP_DELETE = b"\x1a"
RESPONSE_HEADER = b"\x0a"
HEADER_REVISION = b"\x18"
DELETED = b"\x10"


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


def int_field(tag: int, n: int) -> bytes:
    """A varint field, left out when zero as proto3 does."""
    return bytes((tag,)) + varint(n) if n else b""


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


@dataclass(frozen=True, slots=True)
class Pieces:
    """A serialized message in pieces, in order: a large response handed to
    the transport without being joined into one buffer (the join of a
    whole-range list would hold the event loop, and double its memory)."""

    parts: list[bytes]
    size: int

    def join(self) -> bytes:
        return b"".join(self.parts)
