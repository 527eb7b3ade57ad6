"""RFC 9113's connection-preface, stream-id and header-validation rules,
and gRPC's grpc-timeout syntax, as etcd 3.5.1 applies them: each case is
sent as raw frames to a real etcd and to brain, and brain's reply must be
etcd's (a connection error ends with GOAWAY, a stream error with
RST_STREAM; etcd's insecure client port is grpc-go's HTTP/2 server)."""
from __future__ import annotations

import socket
import ssl
import time

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.transport.h2 import frames
from brain.transport.h2.hpack import Decoder, literal
from servers import brain_server, etcd_server

RANGE_A = b"\x0a\x01a"  # RangeRequest(key=b"a")
BODY = len(RANGE_A).to_bytes(5, "big") + RANGE_A


def block(*headers: tuple[bytes, bytes]) -> bytes:
    return b"".join(literal(n, v) for n, v in headers)


METHOD = (b":method", b"POST")
SCHEME = (b":scheme", b"http")
PATH = (b":path", b"/etcdserverpb.KV/Range")
AUTHORITY = (b":authority", b"localhost")
GRPC = (b"content-type", b"application/grpc")
TE = (b"te", b"trailers")
GOOD = (METHOD, SCHEME, PATH, AUTHORITY, GRPC, TE)


def request(sid: int, *headers: tuple[bytes, bytes]) -> bytes:
    return (frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, block(*headers))
            + frames.frame(frames.DATA, frames.FLAG_END_STREAM, sid, BODY))


def _open_request(sid: int) -> bytes:
    """A request whose body has not ended."""
    return (frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, block(*GOOD))
            + frames.frame(frames.DATA, 0, sid, BODY))


@pytest.fixture(scope="module", params=["etcd", "etcd-tls", "brain"])
def server(request, tmp_path_factory):
    """etcd, etcd serving TLS without client certificates (its gRPC then
    runs under Go's net/http2 server), or brain."""
    tmp = str(tmp_path_factory.mktemp(request.param))
    if request.param == "etcd-tls":
        from certs import make_pki
        pki = make_pki(tmp + "/pki")
        srv = etcd_server(tmp, "--cert-file", pki["server"], "--key-file", pki["server_key"])
        srv.argv = [a.replace("http://127.0.0.1:%d" % srv.port, "https://127.0.0.1:%d" % srv.port) for a in srv.argv]
        srv.tls = (pki["ca"], pki["client"], pki["client_key"])
        srv.kind = "etcd-tls"
    else:
        start = etcd_server if request.param == "etcd" else brain_server
        srv = start(tmp)
    srv.start()
    yield srv
    srv.stop()


def outcome(port: int, data: bytes, settings_first: bool = True, timeout: float = 2.0, tls=None) -> tuple:
    """Send the preface (and SETTINGS), then data; the server's first answer:
    ("goaway", code), ("rst", sid, code) with no GOAWAY after it, ("status",
    sid, :status, grpc-status, grpc-message) of a gRPC response, ("http",
    sid, :status) of a plain HTTP one, ("closed",) without a GOAWAY, or
    ("nothing",)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        ctx = ssl.create_default_context(cafile=tls[0])
        ctx.set_alpn_protocols(["h2"])
        raw = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    dec = Decoder()
    http_status = None
    reset = None
    with raw as s:
        s.sendall(frames.PREFACE + (frames.settings([]) if settings_first else b"") + data)
        buf = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while len(buf) >= 9:
                lt, flags, sid = frames.HEADER.unpack_from(buf, 0)
                n = lt >> 8
                if len(buf) < 9 + n:
                    break
                ftype, payload, buf = lt & 0xFF, buf[9:9 + n], buf[9 + n:]
                if ftype == frames.GOAWAY:
                    return ("goaway", frames.u32(payload, 4))
                if ftype == frames.RST_STREAM and reset is None:
                    # a connection error may follow: a PING's ack says none did
                    # (a second RST_STREAM may answer DATA sent after the HEADERS)
                    reset = ("rst", sid, frames.u32(payload))
                    s.sendall(frames.frame(frames.PING, 0, 0, b"rstcheck"))
                if ftype == frames.PING and payload == b"rstcheck" and reset is not None:
                    return reset
                if ftype == frames.DATA and flags & frames.FLAG_END_STREAM:
                    return ("http", sid, http_status)
                if ftype == frames.HEADERS:
                    if flags & frames.FLAG_PADDED:
                        payload = payload[1:len(payload) - payload[0]]
                    if flags & frames.FLAG_PRIORITY:
                        payload = payload[5:]
                    hs = dict(dec.decode(payload))
                    if b":status" in hs:
                        http_status = hs[b":status"]
                    if flags & frames.FLAG_END_STREAM:
                        return ("status", sid, hs.get(b":status"), hs.get(b"grpc-status"), hs.get(b"grpc-message"))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, OSError):
                return reset or ("closed",)
            if not chunk:
                return reset or ("closed",)
            buf += chunk
    return ("nothing",)


def reply(outcome: tuple) -> str:
    kind = outcome[0]
    if kind == "goaway":
        return f"GOAWAY {outcome[1]}"
    if kind == "rst":
        return f"RST {outcome[2]}"
    if kind == "status":
        return f"grpc-status {int(outcome[3])}"
    if kind == "http":
        return f"HTTP {int(outcome[2])}"
    return kind


PROTOCOL = f"RST {frames.PROTOCOL_ERROR}"  # a stream error
CLOSE = f"GOAWAY {frames.PROTOCOL_ERROR}"  # a connection error
SERVED = "grpc-status 0"
DEADLINE = f"grpc-status {grpc.StatusCode.DEADLINE_EXCEEDED.value[0]}"

# case: headers of stream 1, and the replies of (etcd, etcd over TLS, brain).
# etcd's plain port is grpc-go's HTTP/2 server, its TLS port Go's net/http2
# (grpc-go's handler below it). Where they differ from each other brain
# follows RFC 9113: connection-specific fields and `te` other than
# "trailers" (8.2.2), and a request without :scheme or :path (8.3.1), are
# malformed, a stream error PROTOCOL_ERROR; grpc-go serves these, net/http2
# answers 400 or resets them.
STREAM_CASES: dict[str, tuple[tuple[tuple[bytes, bytes], ...], tuple[str, str, str]]] = {
    "uppercase name": ((*GOOD, (b"X-Upper", b"1")), (PROTOCOL, CLOSE, PROTOCOL)),
    "pseudo after regular": ((METHOD, SCHEME, AUTHORITY, GRPC, TE, PATH), (PROTOCOL, CLOSE, PROTOCOL)),
    "unknown pseudo": ((METHOD, SCHEME, PATH, (b":foo", b"x"), AUTHORITY, GRPC, TE), (PROTOCOL, CLOSE, PROTOCOL)),
    "duplicate pseudo": ((METHOD, SCHEME, PATH, PATH, AUTHORITY, GRPC, TE), (PROTOCOL, CLOSE, PROTOCOL)),
    "response pseudo": ((METHOD, SCHEME, PATH, (b":status", b"200"), AUTHORITY, GRPC, TE), (PROTOCOL, CLOSE, PROTOCOL)),
    "no :method": ((SCHEME, PATH, AUTHORITY, GRPC, TE), (PROTOCOL, PROTOCOL, PROTOCOL)),
    "no :scheme": ((METHOD, PATH, AUTHORITY, GRPC, TE), (SERVED, PROTOCOL, PROTOCOL)),
    "no :path": ((METHOD, SCHEME, AUTHORITY, GRPC, TE), ("grpc-status 8", PROTOCOL, PROTOCOL)),
    "connection": ((*GOOD, (b"connection", b"keep-alive")), (SERVED, "HTTP 400", PROTOCOL)),
    "keep-alive": ((*GOOD, (b"keep-alive", b"timeout=5")), (SERVED, "HTTP 400", PROTOCOL)),
    "proxy-connection": ((*GOOD, (b"proxy-connection", b"keep-alive")), (SERVED, "HTTP 400", PROTOCOL)),
    "transfer-encoding": ((*GOOD, (b"transfer-encoding", b"chunked")), (SERVED, "HTTP 400", PROTOCOL)),
    "upgrade": ((*GOOD, (b"upgrade", b"websocket")), (SERVED, "HTTP 400", PROTOCOL)),
    "te not trailers": ((METHOD, SCHEME, PATH, AUTHORITY, GRPC, (b"te", b"gzip")), (SERVED, "HTTP 400", PROTOCOL)),
    # grpc-timeout (gRPC over HTTP/2: 1 to 8 digits, then H M S m u n); grpc-go
    # reads the digits as a signed number, so "-1S" is a deadline already past
    "timeout abc": ((*GOOD, (b"grpc-timeout", b"abc")), (PROTOCOL, "HTTP 500", PROTOCOL)),
    "timeout 9 digits": ((*GOOD, (b"grpc-timeout", b"123456789S")), (PROTOCOL, "HTTP 500", PROTOCOL)),
    "timeout no unit": ((*GOOD, (b"grpc-timeout", b"10")), (PROTOCOL, "HTTP 500", PROTOCOL)),
    "timeout bad unit": ((*GOOD, (b"grpc-timeout", b"10x")), (PROTOCOL, "HTTP 500", PROTOCOL)),
    # (etcd's handler sometimes sees the past deadline as a cancel: UNKNOWN)
    "timeout -1S": ((*GOOD, (b"grpc-timeout", b"-1S")), (f"{DEADLINE}|grpc-status 2", f"{DEADLINE}|grpc-status 2", DEADLINE)),
    "timeout 8 digits": ((*GOOD, (b"grpc-timeout", b"99999999n")), (SERVED, SERVED, SERVED)),
    "well formed": (GOOD, (SERVED, SERVED, SERVED)),
}
KINDS = ("etcd", "etcd-tls", "brain")


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_request_headers(server, case):
    headers, expected = STREAM_CASES[case]
    got = reply(outcome(server.port, request(1, *headers), tls=server.tls))
    assert got in expected[KINDS.index(server.kind)].split("|")
    _alive(server)


# case: bytes after the preface, whether the client's SETTINGS come first,
# and the replies: etcd's grpc-go closes the connection without a GOAWAY,
# Go's net/http2 sends GOAWAY(PROTOCOL_ERROR), as RFC 9113 asks, and so does brain
CONNECTION_CASES: dict[str, tuple[bytes, bool, tuple[str, str, str]]] = {
    "PING before SETTINGS": (frames.frame(frames.PING, 0, 0, b"\x00" * 8) + frames.settings([]), False, ("closed", CLOSE, CLOSE)),
    "HEADERS before SETTINGS": (request(1, *GOOD) + frames.settings([]), False, ("closed", CLOSE, CLOSE)),
    "PRIORITY on stream 0": (frames.frame(frames.PRIORITY, 0, 0, b"\x00\x00\x00\x00\x10"), True, ("closed", CLOSE, CLOSE)),
    "stream id going down": (request(5, *GOOD) + request(3, *GOOD), True, ("closed", CLOSE, CLOSE)),
    "even stream id": (request(2, *GOOD), True, ("closed", CLOSE, CLOSE)),
    "trailers without END_STREAM": (_open_request(1) + frames.frame(
        frames.HEADERS, frames.FLAG_END_HEADERS, 1, block((b"x-trailer", b"1"))), True, (PROTOCOL, PROTOCOL, PROTOCOL)),
    "trailers with a pseudo-header": (_open_request(1) + frames.frame(
        frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, 1, block(PATH)), True, (PROTOCOL, PROTOCOL, PROTOCOL)),
    # RFC 9113 5.3.1: a stream depending on itself is a stream error, which
    # grpc-go overlooks
    "PRIORITY depending on itself": (
        frames.frame(frames.PRIORITY, 0, 1, b"\x00\x00\x00\x01\x10"), True, ("nothing", PROTOCOL, PROTOCOL)),
    "HEADERS depending on itself": (frames.frame(
        frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_PRIORITY, 1, b"\x00\x00\x00\x01\x10" + block(*GOOD))
        + frames.frame(frames.DATA, frames.FLAG_END_STREAM, 1, BODY), True, (SERVED, PROTOCOL, PROTOCOL)),
    # not in the RFC: Go's net/http2 hangs up on these, and so does brain (grpc-go takes them)
    "SETTINGS of 101 entries": (frames.settings([(0x10 + i, 0) for i in range(101)]), True, ("nothing", CLOSE, CLOSE)),
    "SETTINGS with duplicates": (
        frames.settings([(frames.SETTINGS_INITIAL_WINDOW_SIZE, 1000)] * 2), True, ("nothing", CLOSE, CLOSE)),
}


@pytest.mark.parametrize("case", list(CONNECTION_CASES))
def test_connection_rules(server, case):
    data, settings_first, expected = CONNECTION_CASES[case]
    got = outcome(server.port, data, settings_first=settings_first, tls=server.tls)
    assert reply(got) == expected[KINDS.index(server.kind)]
    _alive(server)


def _alive(server) -> None:
    """A normal client on another connection is answered."""
    with server.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"a"), timeout=10)


def test_grpc_timeout_values():
    """1 to 8 digits and a unit; grpc-go's reading of a sign is kept."""
    from brain.transport.timeout import grpc_timeout

    assert grpc_timeout(b"1H") == 3600.0
    assert grpc_timeout(b"2M") == 120.0
    assert grpc_timeout(b"99999999S") == 99999999.0
    assert grpc_timeout(b"5m") == pytest.approx(0.005)
    assert grpc_timeout(b"7u") == pytest.approx(7e-6)
    assert grpc_timeout(b"8n") == pytest.approx(8e-9)
    assert grpc_timeout(b"-1S") == -1.0 and grpc_timeout(b"+2S") == 2.0
    for bad in (b"", b"S", b"1", b"abc", b"123456789S", b"1s", b"1.5S", b"-S", b" 1S", b"1 S"):
        with pytest.raises(ValueError):
            grpc_timeout(bad)
