"""GETs of /health, /version, /metrics on the client port beside gRPC, as
etcd serves them: HTTP/1.1 (plain and TLS, with ALPN) and HTTP/2."""
from __future__ import annotations

import http.client
import json
import socket
import struct
import ssl
import time

import grpc

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.transport.h2 import frames
from brain.transport.h2.hpack import Decoder, literal
from certs import make_pki
from servers import brain_server, etcd_server


def get(port: int, path: str, method: str = "GET", context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def h2_get(sock: socket.socket, path: str, sid: int = 1) -> tuple[dict[bytes, bytes], bytes]:
    """One HTTP/2 GET with raw frames: the response headers and body."""
    if sid == 1:
        # windows large enough for /metrics (a few hundred KB) without
        # WINDOW_UPDATEs as the body arrives
        window = 16 << 20
        sock.sendall(frames.PREFACE + frames.settings([(frames.SETTINGS_INITIAL_WINDOW_SIZE, window)])
                     + frames.frame(frames.WINDOW_UPDATE, 0, 0, struct.pack(">I", window - frames.DEFAULT_WINDOW)))
    block = b"\x82\x86" + literal(b":path", path.encode()) + literal(b":authority", b"127.0.0.1")
    sock.sendall(frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, sid, block))
    decoder = Decoder()
    headers: dict[bytes, bytes] = {}
    body = b""
    buf = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        while len(buf) >= 9:
            lt, flags, fsid = frames.HEADER.unpack_from(buf, 0)
            n = lt >> 8
            if len(buf) < 9 + n:
                break
            ftype, payload, buf = lt & 0xFF, buf[9:9 + n], buf[9 + n:]
            if fsid != sid:
                continue
            if ftype == frames.HEADERS:
                headers.update(decoder.decode(payload))
            elif ftype == frames.DATA:
                body += payload
            elif ftype == frames.RST_STREAM:
                raise AssertionError("stream reset")
            if ftype in (frames.HEADERS, frames.DATA) and flags & frames.FLAG_END_STREAM:
                return headers, body
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    raise AssertionError("no complete response")


def grpc_put(channel: grpc.Channel, key: bytes) -> None:
    rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=10)


def test_http1_paths_beside_grpc(brain):
    with brain.channel() as ch:
        grpc_put(ch, b"before")
        status, headers, body = get(brain.port, "/health")
        assert status == 200 and json.loads(body) == {"health": "true", "reason": ""}
        assert headers["connection"] == "close"
        status, headers, body = get(brain.port, "/version")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"etcdserver": "3.5.16", "etcdcluster": "3.5.0"}
        status, headers, body = get(brain.port, "/metrics?x=1")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b"etcd_server_has_leader" in body
        assert get(brain.port, "/nope")[0] == 404
        status, headers, _ = get(brain.port, "/health", method="POST")
        assert status == 405 and headers["allow"] == "GET"
        grpc_put(ch, b"after")  # the same channel, still good


def test_http1_malformed_and_oversized(brain):
    with socket.create_connection(("127.0.0.1", brain.port), timeout=10) as s:
        s.sendall(b"GET /\r\n\r\n")  # no HTTP version
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", brain.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n" + b"X-Filler: " + b"y" * 20000)
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")
    # a request arriving a byte at a time
    with socket.create_connection(("127.0.0.1", brain.port), timeout=10) as s:
        for b in b"GET /health HTTP/1.0\r\n\r\n":
            s.sendall(bytes((b,)))
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")


def test_http2_gets_beside_grpc(brain):
    with socket.create_connection(("127.0.0.1", brain.port), timeout=10) as s:
        headers, body = h2_get(s, "/health")
        assert headers[b":status"] == b"200" and headers[b"content-type"] == b"application/json"
        assert json.loads(body) == {"health": "true", "reason": ""}
        assert int(headers[b"content-length"]) == len(body)
        headers, body = h2_get(s, "/version", sid=3)
        assert json.loads(body)["etcdserver"] == "3.5.16"
        headers, body = h2_get(s, "/metrics", sid=5)
        assert headers[b":status"] == b"200" and b"etcd_server_has_leader" in body
        headers, body = h2_get(s, "/nope", sid=7)
        assert headers[b":status"] == b"404"
    with brain.channel() as ch:
        grpc_put(ch, b"k")


def test_tls_http1_and_http2_by_alpn(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    srv = brain_server(str(tmp_path), "--transport", "h2", tls=(pki["ca"], pki["server"], pki["server_key"])).start()
    try:
        ctx = ssl.create_default_context(cafile=pki["ca"])
        ctx.load_cert_chain(pki["client"], pki["client_key"])
        status, _, body = get(srv.port, "/health", context=ctx)
        assert status == 200 and json.loads(body)["health"] == "true"

        h1 = ssl.create_default_context(cafile=pki["ca"])
        h1.load_cert_chain(pki["client"], pki["client_key"])
        h1.set_alpn_protocols(["http/1.1"])
        with h1.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10), server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() == "http/1.1"
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'"etcdcluster":"3.5.0"' in s.recv(1000)

        h2 = ssl.create_default_context(cafile=pki["ca"])
        h2.load_cert_chain(pki["client"], pki["client_key"])
        h2.set_alpn_protocols(["h2", "http/1.1"])
        with h2.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10), server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() == "h2"
            headers, body = h2_get(s, "/health")
            assert headers[b":status"] == b"200" and json.loads(body)["health"] == "true"

        with srv.channel() as ch:
            grpc_put(ch, b"tls")
    finally:
        srv.stop()


def test_same_shapes_as_etcd(tmp_path, brain):
    etcd = etcd_server(str(tmp_path)).start()
    try:
        for path in ("/health", "/version", "/metrics", "/nope"):
            e_status, e_headers, e_body = get(etcd.port, path)
            b_status, b_headers, b_body = get(brain.port, path)
            assert b_status == e_status, path
            if path in ("/health", "/version"):
                assert set(json.loads(b_body)) == set(json.loads(e_body)), path
            if path == "/version":
                e_version, b_version = json.loads(e_body), json.loads(b_body)
                assert e_version["etcdcluster"] == b_version["etcdcluster"] == "3.5.0"
            if path == "/health":
                assert json.loads(b_body) == json.loads(e_body)
            if path == "/metrics":
                assert b_headers["content-type"].startswith("text/plain")
                assert e_headers["content-type"].startswith("text/plain")
            if path == "/nope":
                assert b_body == e_body == b"404 page not found\n"
        assert get(etcd.port, "/health", method="POST")[0] == get(brain.port, "/health", method="POST")[0] == 405
    finally:
        etcd.stop()


def test_grpcio_transport_serves_no_http_on_the_client_port(tmp_path):
    """grpcio owns its sockets: with --transport grpcio, gRPC only."""
    srv = brain_server(str(tmp_path), "--transport", "grpcio").start()
    try:
        with srv.channel() as ch:
            grpc_put(ch, b"k")
        try:
            status: int | None = get(srv.port, "/health")[0]
        except (http.client.HTTPException, OSError):
            status = None
        assert status != 200
    finally:
        srv.stop()


def test_etcdctl_check_datascale(brain):
    """etcdctl's data-scale check writes keys, then reads the server's
    memory from /metrics on the client URL."""
    import subprocess

    from servers import etcd_tool

    r = subprocess.run([etcd_tool("etcdctl"), f"--endpoints={brain.endpoint}", "check", "datascale", "--load=s"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "PASS: Approximate system memory used" in r.stdout, r.stdout[-500:] + r.stderr[-500:]
