"""Hostile clients over sockets: the attacking connection is answered as
Go's server answers it, and a normal client on another connection is still
served."""
from __future__ import annotations

import socket
from typing import Callable

import grpc
from test_h2_limits import rapid_resets

from brain.transport.h2 import frames
from brain.transport.h2.hpack import literal
from brain.transport.h2.limits import MAX_EARLY_RESETS


RANGE_BLOCK = b"\x83\x86" + literal(b":path", b"/etcdserverpb.KV/Range") + literal(b"content-type", b"application/grpc")
RANGE_A = b"\x0a\x01a"  # RangeRequest(key=b"a")


def _alive(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"alive", timeout=10) == b"alive"


def _brain_alive(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ch.unary_unary("/etcdserverpb.KV/Range")(RANGE_A, timeout=10)  # a RangeResponse, whatever it holds


def _goaway_codes(s: socket.socket) -> list[int]:
    """Read to the end of the connection; the codes of its GOAWAY frames."""
    buf = bytearray()
    codes = []
    pos = 0
    while True:
        try:
            chunk = s.recv(1 << 20)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) - pos >= 9:
            lt, _, _ = frames.HEADER.unpack_from(buf, pos)
            n = lt >> 8
            if len(buf) - pos < 9 + n:
                break
            if lt & 0xFF == frames.GOAWAY:
                codes.append(frames.u32(buf[pos + 13:pos + 17]))
            pos += 9 + n
        del buf[:pos]
        pos = 0
    return codes


def test_ping_flood_without_reading_gets_goaway_enhance_your_calm(echo_server):
    _ping_flood(echo_server.port, lambda: _alive(echo_server.port))
    _alive(echo_server.port)


def test_ping_flood_against_brain(brain):
    _ping_flood(brain.port, lambda: _brain_alive(brain.port))
    _brain_alive(brain.port)


def _ping_flood(port: int, alive: Callable[[], None]) -> None:
    """Pings without reading the acks, until the server stops reading (it
    then reads on only to discard); the probe `alive` runs meanwhile."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the acks pile up at the server, not here
    s.connect(("127.0.0.1", port))
    with s:
        s.settimeout(3)
        s.sendall(frames.PREFACE + frames.settings([]))
        pings = frames.frame(frames.PING, 0, 0, b"\x00" * 8) * 4096
        # at most 35 MB of pings: several times what the socket buffers of a
        # connection and the server's bound on queued acks hold
        for _ in range(512):
            try:
                s.sendall(pings)
            except (socket.timeout, ConnectionResetError, BrokenPipeError):
                break  # the server stopped reading
        alive()
        assert frames.ENHANCE_YOUR_CALM in _goaway_codes(s)


def test_rapid_reset_gets_goaway_enhance_your_calm(echo_server):
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=10) as s:
        s.sendall(frames.PREFACE + frames.settings([]))
        try:
            # far more resets than handlers can stop within one read
            s.sendall(rapid_resets(1, 3 * MAX_EARLY_RESETS))
        except (ConnectionResetError, BrokenPipeError):
            pass
        _alive(echo_server.port)
        assert frames.ENHANCE_YOUR_CALM in _goaway_codes(s)
    _alive(echo_server.port)


def test_rapid_reset_against_brain(brain):
    out = b"".join(
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, RANGE_BLOCK)
        + frames.frame(frames.DATA, frames.FLAG_END_STREAM, sid, len(RANGE_A).to_bytes(5, "big") + RANGE_A)
        + frames.rst_stream(sid, frames.CANCEL)
        for sid in range(1, 6 * MAX_EARLY_RESETS, 2)
    )
    with socket.create_connection(("127.0.0.1", brain.port), timeout=10) as s:
        s.sendall(frames.PREFACE + frames.settings([]))
        try:
            s.sendall(out)
        except (ConnectionResetError, BrokenPipeError):
            pass
        _brain_alive(brain.port)
        assert frames.ENHANCE_YOUR_CALM in _goaway_codes(s)
    _brain_alive(brain.port)
