"""HPACK header decoding (RFC 7541) with a cache of whole header blocks,
and the few constant encodings a gRPC server sends.

gRPC clients send nearly the same header block on every call of a
connection, so the decoder remembers blocks by their raw bytes. That is only
sound when the result cannot depend on, or change, the dynamic table behind
the decoder's back, so each cached block records:

* whether it reads the dynamic table: then it is reused only while the table
  is unchanged (a generation number counts every change);
* the entries it inserts: these are replayed on reuse (only for blocks that
  read nothing from the dynamic table, whose results are fixed by the bytes);
* blocks with a table size update are never cached.

A header list may decode to far more than its block (an index of a large
table entry, repeated), so its decoded size is bounded as it is decoded
(SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 7540 6.5.2 does); past the
bound the rest of the block is only parsed, for the table's sake, and
HeaderListTooLarge raised.
"""
from __future__ import annotations

from typing import Callable

from brain.transport.h2.huffman import HuffmanError, decode as huffman_decode
from brain.wire import varint

Header = tuple[bytes, bytes]

STATIC_TABLE: tuple[Header, ...] = tuple(
    (n.encode(), v.encode())
    for n, v in (
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
        (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
        (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
        (":status", "404"), (":status", "500"), ("accept-charset", ""), ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""), ("accept-ranges", ""), ("accept", ""), ("access-control-allow-origin", ""),
        ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
        ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""),
        ("from", ""), ("host", ""), ("if-match", ""), ("if-modified-since", ""),
        ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""), ("last-modified", ""),
        ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
        ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
        ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
        ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""),
        ("www-authenticate", ""),
    )
)
_NSTATIC = len(STATIC_TABLE)  # 61
_ENTRY_OVERHEAD = 32
_CACHE_LIMIT = 256  # distinct blocks remembered per connection
_CACHEABLE_BLOCK = 4096  # bigger blocks are rare and not worth remembering
# Huffman-decoded strings remembered per connection, by their coded bytes;
# long ones are not, so the memory this takes stays small
_CACHEABLE_STRING = 1024
_STRING_CACHE_BYTES = 256 * 1024


class HPACKError(ValueError):
    pass


class HeaderListTooLarge(Exception):
    """The block was valid and decoded (the dynamic table is up to date),
    but its header list is larger than the advertised limit."""


class _Cached:
    __slots__ = ("headers", "inserts", "reads_table", "generation")

    def __init__(self, headers: list[Header], inserts: list[Header], reads_table: bool, generation: int) -> None:
        self.headers = headers
        self.inserts = inserts
        self.reads_table = reads_table
        self.generation = generation


class Decoder:
    """One per connection: the dynamic table is connection state."""

    def __init__(
        self, max_table_size: int = 4096, max_header_list: int = 1 << 20,
        check: Callable[[list[Header]], None] | None = None,
    ) -> None:
        """check: run on each request header list decoded from a block not
        cached (it raises to refuse the request); a refused block is not
        cached, so cached blocks are ones that passed."""
        # newest first, as HPACK indexes it
        self._table: list[Header] = []
        self._size = 0
        self._max_size = max_table_size
        self._settings_max = max_table_size  # what we advertised
        self._generation = 0
        self._cache: dict[bytes, _Cached] = {}
        self._strings: dict[bytes, bytes] = {}
        self._strings_bytes = 0
        self._max_list = max_header_list
        self._check = check
        # the size (as SETTINGS_MAX_HEADER_LIST_SIZE counts it) of the list the
        # last decode returned, if that list is the caller's alone; 0 if the
        # block cache shares it, whose memory is bounded on its own
        self.unshared = 0

    def decode(self, block: bytes, request: bool = True) -> list[Header]:
        """The header list of a block; request: it opens a request, and is
        checked as one (trailers are not, and are not cached)."""
        hit = self._cache.get(block)
        if hit is not None and (not hit.reads_table or hit.generation == self._generation):
            for name, value in hit.inserts:
                self._insert(name, value)
            self.unshared = 0
            return hit.headers
        headers, inserts, reads_table, sized, size = self._decode(block)
        self.unshared = size
        if request:
            if self._check is not None:
                self._check(headers)
            if not sized and len(block) <= _CACHEABLE_BLOCK and not (reads_table and inserts):
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[block] = _Cached(headers, inserts, reads_table, self._generation)
                self.unshared = 0
        return headers

    def _insert(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        table = self._table
        while table and self._size + size > self._max_size:
            n, v = table.pop()
            self._size -= len(n) + len(v) + _ENTRY_OVERHEAD
        if size <= self._max_size:
            table.insert(0, (name, value))
            self._size += size
        self._generation += 1

    def _evict_all(self) -> None:
        self._table.clear()
        self._size = 0
        self._generation += 1

    def _resize(self, new: int) -> None:
        if new > self._settings_max:
            raise HPACKError("table size update above the advertised limit")
        self._max_size = new
        table = self._table
        while table and self._size > new:
            n, v = table.pop()
            self._size -= len(n) + len(v) + _ENTRY_OVERHEAD
        self._generation += 1

    def _entry(self, index: int) -> tuple[Header, bool]:
        if index <= 0:
            raise HPACKError("header index 0")
        if index <= _NSTATIC:
            return STATIC_TABLE[index - 1], False
        try:
            return self._table[index - _NSTATIC - 1], True
        except IndexError:
            raise HPACKError(f"header index {index} out of range") from None

    def _decode(self, block: bytes) -> tuple[list[Header], list[Header], bool, bool, int]:
        headers: list[Header] = []
        inserts: list[Header] = []
        reads_table = False
        sized = False
        pos = 0
        end = len(block)
        integer = self._integer
        string = self._string
        size = 0
        max_list = self._max_list
        while pos < end:
            if size > max_list:
                self._skip(block, pos)
                raise HeaderListTooLarge(f"header list larger than {max_list} bytes")
            b = block[pos]
            if b & 0x80:  # indexed field
                if b != 0xFF:
                    index = b & 0x7F
                    pos += 1
                else:
                    index, pos = integer(block, pos, 7)
                header, dyn = self._entry(index)
                reads_table |= dyn
                headers.append(header)
                size += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
                continue
            field = pos
            if b & 0x40:  # literal with incremental indexing
                prefix, indexing = 6, True
            elif b & 0x20:  # dynamic table size update
                if headers:
                    raise HPACKError("table size update after a header")
                table_size, pos = integer(block, pos, 5)
                self._resize(table_size)
                sized = True
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                prefix, indexing = 4, False
            index, pos = integer(block, pos, prefix)
            if index:
                (name, _), dyn = self._entry(index)
                reads_table |= dyn
            else:
                if pos < end and block[pos] & 0x7F == 0x7F and size + self._least_length(block, pos) > max_list:
                    self._skip(block, field)  # a long string that cannot fit is not worth decoding
                    raise HeaderListTooLarge(f"header list larger than {max_list} bytes")
                name, pos = string(block, pos)
            if pos < end and block[pos] & 0x7F == 0x7F and size + len(name) + self._least_length(block, pos) > max_list:
                self._skip(block, field)
                raise HeaderListTooLarge(f"header list larger than {max_list} bytes")
            value, pos = string(block, pos)
            headers.append((name, value))
            size += len(name) + len(value) + _ENTRY_OVERHEAD
            if indexing:
                self._insert(name, value)
                inserts.append((name, value))
        if size > max_list:
            raise HeaderListTooLarge(f"header list larger than {max_list} bytes")
        return headers, inserts, reads_table, sized, size

    def _skip(self, block: bytes, pos: int) -> None:
        """Parse the rest of a block whose header list is already too large:
        nothing is kept but the table's inserts, whose strings are decoded
        only when the entry can fit in the table at all."""
        end = len(block)
        integer = self._integer
        while pos < end:
            b = block[pos]
            if b & 0x80:
                index, pos = integer(block, pos, 7)
                self._entry(index)
                continue
            if b & 0x20 and not b & 0x40:
                raise HPACKError("table size update after a header")
            indexing = b & 0x40 != 0
            index, pos = integer(block, pos, 6 if indexing else 4)
            if not indexing:
                if index:
                    self._entry(index)
                else:
                    pos = self._string_end(block, pos)
                pos = self._string_end(block, pos)
                continue
            name_start = pos
            name_least = len(self._entry(index)[0][0]) if index else self._least_length(block, pos)
            if not index:
                pos = self._string_end(block, pos)
            value_start = pos
            pos = self._string_end(block, pos)
            if name_least + self._least_length(block, value_start) + _ENTRY_OVERHEAD > self._max_size:
                self._evict_all()  # an entry too large for the table empties it
                continue
            name = self._entry(index)[0][0] if index else self._string(block, name_start)[0]
            self._insert(name, self._string(block, value_start)[0])

    def _string_end(self, block: bytes, pos: int) -> int:
        if pos >= len(block):
            raise HPACKError("truncated string")
        length, pos = self._integer(block, pos, 7)
        if pos + length > len(block):
            raise HPACKError("truncated string")
        return pos + length

    def _least_length(self, block: bytes, pos: int) -> int:
        """The fewest bytes a string can decode to (Huffman codes are at
        most 30 bits)."""
        if pos >= len(block):
            raise HPACKError("truncated string")
        huffman = block[pos] & 0x80
        length, _ = self._integer(block, pos, 7)
        return length * 8 // 30 if huffman else length

    @staticmethod
    def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
        mask = (1 << prefix) - 1
        value = block[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        end = len(block)
        while True:
            if pos >= end:
                raise HPACKError("truncated integer")
            b = block[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos
            if shift > 28:
                raise HPACKError("integer too large")

    def _string(self, block: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(block):
            raise HPACKError("truncated string")
        huffman = block[pos] & 0x80
        length, pos = self._integer(block, pos, 7)
        end = pos + length
        if end > len(block):
            raise HPACKError("truncated string")
        raw = block[pos:end]
        if not huffman:
            return raw, end
        # the same values (user agent, authority, method paths) come back on
        # every call, and Huffman decoding is the slow part of HPACK in Python
        strings = self._strings
        text = strings.get(raw)
        if text is None:
            try:
                text = huffman_decode(raw)
            except HuffmanError as e:
                raise HPACKError(str(e)) from None
            if len(raw) <= _CACHEABLE_STRING:
                self._strings_bytes += len(raw) + len(text)
                if self._strings_bytes > _STRING_CACHE_BYTES:
                    strings.clear()
                    self._strings_bytes = len(raw) + len(text)
                strings[raw] = text
        return text, end


def encode_integer(value: int, prefix: int, first: int) -> bytes:
    """RFC 7541 5.1: a prefix of `prefix` bits, then what exceeds it as
    base-128 groups, least significant first (a protobuf varint)."""
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    return bytes((first | mask,)) + varint(value - mask)


def literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing and without Huffman coding:
    the server keeps no dynamic table, so its blocks can be constants."""
    return b"\x00" + encode_integer(len(name), 7, 0) + name + encode_integer(len(value), 7, 0) + value


def literal_indexed_name(index: int, value: bytes) -> bytes:
    return encode_integer(index, 4, 0) + encode_integer(len(value), 7, 0) + value
