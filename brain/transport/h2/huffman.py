"""HPACK's Huffman code (RFC 7541 appendix B), decoding only.

The code is canonical: codes of each length are consecutive integers, in
symbol order, after the shorter ones. So the 257 code lengths below are the
whole table; the codes are rebuilt from them. Decoding runs a nibble-at-a-time
state machine over the code tree, built once when the module is imported
(4096 small entries), because bit-at-a-time decoding in Python costs
microseconds per character."""
from __future__ import annotations

# code length in bits of each symbol 0..255, then EOS (256)
CODE_LENGTHS: tuple[int, ...] = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
)
EOS = 256


class HuffmanError(ValueError):
    pass


def canonical_codes(lengths: tuple[int, ...]) -> list[int]:
    codes = [0] * len(lengths)
    code = 0
    prev = 0
    for i, sym in enumerate(sorted(range(len(lengths)), key=lambda s: (lengths[s], s))):
        if i:
            code = (code + 1) << (lengths[sym] - prev)
        prev = lengths[sym]
        codes[sym] = code
    return codes


class _Tables:
    """Node 0 is the root; internal nodes only (leaves are emitted symbols).
    step[node * 16 + nibble] = (next node, emitted byte or -1, failed)."""

    def __init__(self) -> None:
        codes = canonical_codes(CODE_LENGTHS)
        children: list[list[int]] = [[-1, -1]]  # internal node -> child ids; leaf = -(sym + 2)
        depth = [0]
        all_ones = [True]
        for sym, (code, n) in enumerate(zip(codes, CODE_LENGTHS)):
            node = 0
            for i in range(n - 1, -1, -1):
                bit = (code >> i) & 1
                if i == 0:
                    children[node][bit] = -(sym + 2)
                    break
                nxt = children[node][bit]
                if nxt < 0:
                    nxt = len(children)
                    children.append([-1, -1])
                    depth.append(depth[node] + 1)
                    all_ones.append(all_ones[node] and bit == 1)
                    children[node][bit] = nxt
                node = nxt
        # a decode may stop in a node whose path is at most 7 one-bits: padding
        self.accepting = [d == 0 or (ones and d <= 7) for d, ones in zip(depth, all_ones)]
        step: list[tuple[int, int, bool]] = []
        for node in range(len(children)):
            for nibble in range(16):
                cur, out, failed = node, -1, False
                for i in (3, 2, 1, 0):
                    child = children[cur][(nibble >> i) & 1]
                    if child <= -2:
                        sym = -child - 2
                        if sym == EOS or out >= 0:
                            # EOS in a string is an error; two symbols in one
                            # nibble can't happen (shortest code is 5 bits)
                            failed = True
                            break
                        out, cur = sym, 0
                    else:
                        cur = child
                step.append((cur, out, failed))
        self.step = step


_TABLES = _Tables()


def decode(data: bytes) -> bytes:
    step = _TABLES.step
    out = bytearray()
    node = 0
    for byte in data:
        node, sym, failed = step[(node << 4) | (byte >> 4)]
        if sym >= 0:
            out.append(sym)
        node, sym2, failed2 = step[(node << 4) | (byte & 15)]
        if sym2 >= 0:
            out.append(sym2)
        if failed or failed2:
            raise HuffmanError("EOS or invalid code in Huffman string")
    if not _TABLES.accepting[node]:
        raise HuffmanError("bad Huffman padding")
    return bytes(out)
