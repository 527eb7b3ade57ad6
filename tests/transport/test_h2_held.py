"""What open calls make a connection hold: their own header lists, bounded
per connection and per server (limits.MAX_HELD_HEADERS and
MAX_SERVER_HELD_HEADERS), and their request messages, bounded by the
stream windows however slowly the handler reads."""
from __future__ import annotations

import socket
import time

import grpc
import pytest
from test_h2_core import REQUEST_BLOCK, parse
from test_h2_limits import BIG_HEADERS, _headers_frames

from brain.transport.h2 import frames
from brain.transport.h2.core import H2Connection
from brain.transport.h2.events import RequestReceived
from brain.transport.h2.hpack import literal
from brain.transport.h2.limits import MAX_HELD_HEADERS, HeldHeaders
from brain.transport.protocol import LOCAL_SETTINGS
from servers import brain_server, etcd_server

VALUE = 200 * 1024  # a header value of one stream alone: its block is too big for the decoder's cache


def _core(server: HeldHeaders) -> H2Connection:
    core = H2Connection(BIG_HEADERS, server_headers=server)
    core.initiate()
    core.receive(frames.PREFACE + frames.settings([]))
    core.data_to_send()
    return core


def _big_request(sid: int, size: int = VALUE) -> bytes:
    block = REQUEST_BLOCK + literal(b"x-big", b"%08d" % sid + b"v" * (size - 8))
    return _headers_frames(sid, block, end_stream=False)


def _refused(out: bytes) -> list[int]:
    return [sid for t, _, sid, p in parse(out) if t == frames.RST_STREAM and frames.u32(p) == frames.REFUSED_STREAM]


def test_header_lists_of_open_streams_are_bounded_per_connection():
    server = HeldHeaders(1 << 40)
    core = _core(server)
    opened = []
    sid = 1
    while True:
        events = core.receive(_big_request(sid))
        if not events:
            break
        assert isinstance(events[0], RequestReceived) and events[0].header_bytes > VALUE
        opened.append(sid)
        sid += 2
    assert _refused(core.data_to_send()) == [sid]
    per_stream = core.held_headers.connection.held // len(opened)
    assert len(opened) == MAX_HELD_HEADERS // per_stream
    assert core.held_headers.connection.held <= MAX_HELD_HEADERS and server.held == core.held_headers.connection.held
    # a block the decoder shares costs nothing: a normal call is still served
    events = core.receive(frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid + 2, REQUEST_BLOCK))
    assert [e.header_bytes for e in events] == [0]
    # a stream ending gives its bytes back, and the next big one fits
    core.reset_stream(opened[0], frames.CANCEL)
    core.receive(frames.rst_stream(opened[1], frames.CANCEL))
    assert core.held_headers.connection.held == (len(opened) - 2) * per_stream
    assert len(core.receive(_big_request(sid + 4))) == 1
    # the connection ending gives back everything
    core.terminate(frames.NO_ERROR, "done")
    assert core.held_headers.connection.held == 0 and server.held == 0


def test_header_lists_of_open_streams_are_bounded_per_server():
    server = HeldHeaders(3 * VALUE)
    a, b = _core(server), _core(server)
    assert len(a.receive(_big_request(1))) == 1
    assert len(b.receive(_big_request(1))) == 1
    assert b.receive(_big_request(3)) == [] and _refused(b.data_to_send()) == [3]
    assert server.held <= server.limit
    a.reset_stream(1, frames.CANCEL)
    assert len(b.receive(_big_request(5))) == 1


def test_big_headers_on_many_streams_against_the_server(echo_server):
    """Streams opened with half a megabyte of headers each and never ended:
    past the connection's bound they are refused, the server's count stays
    within it, and a normal client on another connection is answered."""
    server = echo_server._server
    refused = []
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=10) as s:
        s.sendall(frames.PREFACE + frames.settings([]))
        for sid in range(1, 81, 2):
            s.sendall(_big_request(sid, 512 * 1024))
        buf = b""
        end = time.monotonic() + 10
        fit = MAX_HELD_HEADERS // (512 * 1024 + 300)  # a list's size counts a few short headers beside the big one
        while len(refused) < 40 - fit and time.monotonic() < end:
            buf += s.recv(65536)
            while len(buf) >= 9:
                lt, _, sid = frames.HEADER.unpack_from(buf, 0)
                n = lt >> 8
                if len(buf) < 9 + n:
                    break
                if lt & 0xFF == frames.RST_STREAM and frames.u32(buf[9:13]) == frames.REFUSED_STREAM:
                    refused.append(sid)
                buf = buf[9 + n:]
        held = server.held_headers.held
        assert 0 < held <= MAX_HELD_HEADERS
        assert refused == list(range(2 * fit + 1, 81, 2))
        with grpc.insecure_channel(f"127.0.0.1:{echo_server.port}") as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"alive", timeout=10) == b"alive"
    end = time.monotonic() + 10
    while server.held_headers.held and time.monotonic() < end:
        time.sleep(0.05)
    assert server.held_headers.held == 0


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


KEEPALIVE_BLOCK = b"".join(literal(n, v) for n, v in (
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/etcdserverpb.Lease/LeaseKeepAlive"),
    (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
))


def _flood_keepalives(port: int, lease: int, limit: int) -> tuple[int, tuple[int, int] | None]:
    """A LeaseKeepAlive stream from a client with a send window of 0 for the
    server (its answers cannot leave, so the handler stops taking requests),
    pushing requests without regard to flow control until the server resets
    the stream or ends the connection, or `limit` bytes are sent: (bytes
    sent, (frame type, error code) of the server's refusal)."""
    from brain.etcdpb import rpc_pb2

    message = rpc_pb2.LeaseKeepAliveRequest(ID=lease).SerializeToString()
    framed = len(message).to_bytes(5, "big") + message
    payload = framed * (16384 // len(framed))
    data = frames.frame(frames.DATA, 0, 1, payload) * 16
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(frames.PREFACE + frames.settings([(frames.SETTINGS_INITIAL_WINDOW_SIZE, 0)]) + frames.SETTINGS_ACK
                  + frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, 1, KEEPALIVE_BLOCK))
        s.setblocking(False)
        buf = b""
        out = memoryview(data)
        while sent < limit:
            try:
                n = s.send(out)
                sent += n
                out = out[n:] if n < len(out) else memoryview(data)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
            try:
                buf += s.recv(1 << 20)
            except BlockingIOError:
                pass
            except OSError:
                break
            while len(buf) >= 9:
                lt, _, sid = frames.HEADER.unpack_from(buf, 0)
                n = lt >> 8
                if len(buf) < 9 + n:
                    break
                ftype, payload_in, buf = lt & 0xFF, buf[9:9 + n], buf[9 + n:]
                if ftype == frames.RST_STREAM and sid == 1:
                    return sent, (ftype, frames.u32(payload_in))
                if ftype == frames.GOAWAY:
                    return sent, (ftype, frames.u32(payload_in, 4))
    return sent, None


@pytest.mark.parametrize("kind", ["etcd", "brain"])
def test_streaming_requests_are_read_only_as_fast_as_the_handler_takes_them(tmp_path, kind):
    """etcd resets such a stream FLOW_CONTROL_ERROR once the client passes its
    window; so does brain, whose stream window (4 MiB) is what the stream may
    make it hold, and a normal client is answered meanwhile."""
    from brain.etcdpb import rpc_pb2, rpc_pb2_grpc

    srv = (etcd_server if kind == "etcd" else brain_server)(str(tmp_path)).start()
    try:
        with srv.channel() as ch:
            lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
        before = _peak_rss(srv.proc.pid)
        limit = 16 * LOCAL_SETTINGS.initial_window
        sent, refusal = _flood_keepalives(srv.port, lease, limit)
        grown = _peak_rss(srv.proc.pid) - before
        assert refusal == (frames.RST_STREAM, frames.FLOW_CONTROL_ERROR), (sent, refusal)
        if kind == "brain":
            # the window, and what was in flight in the socket buffers
            assert sent < limit // 2
            # the window's worth of requests, held as their bytes (they were
            # 8 times that as an object per message)
            assert grown < 3 * LOCAL_SETTINGS.initial_window, grown
        with srv.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10)
        print(f"\n{kind}: reset after {sent} bytes sent, peak RSS +{grown // 1024} KB")
    finally:
        srv.stop()
