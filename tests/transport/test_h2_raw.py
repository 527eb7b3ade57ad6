"""Hand-made HTTP/2 frames: keepalive pings, settings, and malformed input,
which must cost at most the connection, never the server."""
from __future__ import annotations

import socket
import time

import grpc

from brain.transport.h2 import frames


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(frames.PREFACE + frames.settings([]))
    return s


def _frames(s: socket.socket, until: int, timeout: float = 3.0) -> list[tuple[int, int, int, bytes]]:
    """Read frames until one of type `until` (or EOF/timeout)."""
    buf = b""
    out = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        while len(buf) >= 9:
            lt, flags, sid = frames.HEADER.unpack_from(buf, 0)
            n = lt >> 8
            if len(buf) < 9 + n:
                break
            out.append((lt & 0xFF, flags, sid, buf[9:9 + n]))
            buf = buf[9 + n:]
            if out[-1][0] == until:
                return out
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
    return out


def _alive(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"alive", timeout=5) == b"alive"


def test_pings_faster_than_min_time_are_cut_off_as_grpc_go_does(echo_server):
    """gRPC's keepalive enforcement (etcd's --grpc-keepalive-min-time, 5 s by
    default): pings closer than that earn strikes, and past two the client
    gets GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")."""
    with _connect(echo_server.port) as s:
        for i in range(3):  # the first ping, then two strikes: still answered
            s.sendall(frames.frame(frames.PING, 0, 0, i.to_bytes(8, "big")))
            got = _frames(s, frames.PING)
            assert got[-1][:2] == (frames.PING, frames.FLAG_ACK) and got[-1][3] == i.to_bytes(8, "big")
        s.sendall(frames.frame(frames.PING, 0, 0, (3).to_bytes(8, "big")))
        got = _frames(s, frames.GOAWAY)
        goaway = [f for f in got if f[0] == frames.GOAWAY][-1]
        assert int.from_bytes(goaway[3][4:8], "big") == frames.ENHANCE_YOUR_CALM
        assert b"too_many_pings" in goaway[3][8:]
    _alive(echo_server.port)


def test_settings_are_acked(echo_server):
    with _connect(echo_server.port) as s:
        got = _frames(s, -1, timeout=1.0)  # everything the server sends unprompted
        assert got[0][0] == frames.SETTINGS and got[0][1] == 0  # the server's own settings first
        assert (frames.SETTINGS, frames.FLAG_ACK, 0, b"") in got


def test_http1_request_without_http_handler_is_404(echo_server):
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 404 ")
    _alive(echo_server.port)


def test_bad_preface_and_garbage(echo_server):
    for junk in (b"\x00" * 100, b"get / http/1.1\r\n\r\n", frames.PREFACE + b"\xff" * 40):
        with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as s:
            s.sendall(junk)
            got = _frames(s, frames.GOAWAY)
            assert got and got[-1][0] == frames.GOAWAY
    _alive(echo_server.port)


def test_protocol_errors_get_goaway(echo_server):
    bad = [
        frames.frame(frames.DATA, 0, 0, b"x"),  # DATA on stream 0
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, 2, b"\x82"),  # even stream id
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff\x7f"),  # bad HPACK
        frames.frame(frames.HEADERS, 0, 1, b"\x83") + frames.frame(frames.PING, 0, 0, b"\x00" * 8),  # no CONTINUATION
        frames.frame(frames.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"),
        frames.frame(frames.PING, 0, 0, b"\x00" * 3),
        frames.frame(frames.SETTINGS, 0, 0, b"\x00\x05\x00\x00\x00\x01"),  # max frame size 1
    ]
    for payload in bad:
        with _connect(echo_server.port) as s:
            s.sendall(payload)
            got = _frames(s, frames.GOAWAY)
            assert got and got[-1][0] == frames.GOAWAY, payload
    _alive(echo_server.port)


def test_non_grpc_request_is_refused_not_fatal(echo_server):
    # :method GET, :scheme http, :path /: an HTTP request, not a gRPC call
    with _connect(echo_server.port) as s:
        s.sendall(frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, 1, b"\x82\x86\x84"))
        got = _frames(s, frames.HEADERS)
        assert got[-1][0] == frames.HEADERS and got[-1][2] == 1
        s.sendall(frames.frame(frames.PING, 0, 0, b"p" * 8))
        assert _frames(s, frames.PING)[-1][1] == frames.FLAG_ACK
    _alive(echo_server.port)
