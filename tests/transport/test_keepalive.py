"""gRPC keepalive as etcd's --grpc-keepalive-* configure it: the server pings
an idle client and drops one that does not answer; a client pinging more
often than the minimum time is cut off, unless real traffic goes between."""
from __future__ import annotations

import socket
import time

import pytest

from brain.transport.h2 import frames
from brain.transport.h2.keepalive import PingPolicy
from servers import brain_server, etcd_server


def test_ping_policy_strikes_and_forgiveness():
    p = PingPolicy(min_interval=5.0)
    assert not any(p.too_many(t, False) for t in (0, 5, 10, 15, 20))  # at the minimum: never a strike
    p = PingPolicy(min_interval=5.0)
    assert [p.too_many(t, False) for t in (0, 1, 2, 3)] == [False, False, False, True]
    p = PingPolicy(min_interval=5.0)
    # a response between pings forgives them, as grpc-go's server does
    assert not any(p.too_many(t, t % 2 == 0) for t in range(20))


def _silent_client(port: int, seconds: float) -> tuple[bool, bool]:
    """Open an HTTP/2 connection, never answer pings: (the server pinged,
    the server closed the connection) within seconds."""
    pinged = closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(frames.PREFACE + frames.settings([]) + frames.SETTINGS_ACK)
        buf = b""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not closed:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            while len(buf) >= 9:
                lt, flags, _ = frames.HEADER.unpack_from(buf, 0)
                n = lt >> 8
                if len(buf) < 9 + n:
                    break
                if lt & 0xFF == frames.PING and not flags & frames.FLAG_ACK:
                    pinged = True
                buf = buf[9 + n:]
    return pinged, closed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["etcd", "brain"])
def test_idle_client_that_never_answers_is_dropped(tmp_path, kind):
    start = etcd_server if kind == "etcd" else brain_server
    srv = start(str(tmp_path), "--grpc-keepalive-interval=1s", "--grpc-keepalive-timeout=1s").start()
    try:
        pinged, closed = _silent_client(srv.port, 12)
        assert pinged and closed, (kind, pinged, closed)
        # a normal client is served meanwhile and after
        from brain.etcdpb import rpc_pb2, rpc_pb2_grpc

        with srv.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
    finally:
        srv.stop()
