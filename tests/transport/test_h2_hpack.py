"""HPACK decoding against RFC 7541's examples, and the block cache."""
from __future__ import annotations

import pytest

from brain.transport.h2 import huffman
from brain.transport.h2.hpack import Decoder, HPACKError, literal


def test_huffman_rfc_examples():
    # RFC 7541 C.4.1 and C.4.2
    assert huffman.decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert huffman.decode(bytes.fromhex("a8eb10649cbf")) == b"no-cache"


def test_huffman_rejects_eos_and_bad_padding():
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(b"\xff\xff\xff\xff")  # contains EOS
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4") + b"\x00")  # zero padding


def test_canonical_code_is_prefix_free_and_complete():
    codes = huffman.canonical_codes(huffman.CODE_LENGTHS)
    # Kraft equality: a complete code
    assert sum(2 ** (30 - n) for n in huffman.CODE_LENGTHS) == 2**30
    assert codes[ord("a")] == 0x3 and huffman.CODE_LENGTHS[ord("a")] == 5
    assert codes[huffman.EOS] == 0x3FFFFFFF


def test_dynamic_table_requests_rfc_c3():
    d = Decoder()
    first = bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")
    second = bytes.fromhex("828684be58086e6f2d6361636865")
    third = bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565")
    assert d.decode(first) == [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")]
    assert d.decode(second)[-2:] == [(b":authority", b"www.example.com"), (b"cache-control", b"no-cache")]
    assert d.decode(third) == [
        (b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
        (b":authority", b"www.example.com"), (b"custom-key", b"custom-value"),
    ]
    assert d._size == 164  # RFC 7541 C.3.3


def test_cached_block_is_not_reused_after_the_table_changes():
    d = Decoder()
    insert_a = b"\x40" + b"\x01x" + b"\x01a"  # x: a, indexed
    insert_b = b"\x40" + b"\x01x" + b"\x01b"
    ref = b"\xbe"  # newest dynamic entry
    d.decode(insert_a)
    assert d.decode(ref) == [(b"x", b"a")]
    assert d.decode(ref) == [(b"x", b"a")]  # cached, table unchanged
    d.decode(insert_b)
    assert d.decode(ref) == [(b"x", b"b")]
    # a repeated inserting block is replayed: its entry lands again
    d.decode(insert_a)
    assert d.decode(ref) == [(b"x", b"a")]
    assert len(d._table) == 3


def test_malformed_blocks():
    for block in (b"\x80", b"\xff\xff\xff\xff\xff\xff\xff", b"\x00\x05ab", b"\xc0", b"\x3f\xff\xff\xff\x7f"):
        with pytest.raises(HPACKError):
            Decoder().decode(block)


def test_literal_round_trip():
    assert Decoder().decode(literal(b"grpc-message", b"x" * 300)) == [(b"grpc-message", b"x" * 300)]
