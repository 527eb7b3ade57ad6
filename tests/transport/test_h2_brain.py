"""brain on the h2 transport with etcd's own clients: TLS with client
certificates, etcdctl watch and lease keep-alive, and the Go load generator."""
from __future__ import annotations

import json
import os
import subprocess
import time

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from certs import make_pki
from servers import brain_server, etcd_tool

ETCDLOAD = os.environ.get("ETCDLOAD", "/tmp/etcdload/etcdload")


def _etcdctl(srv, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", *args],
                          capture_output=True, text=True, timeout=timeout)


def _has(srv, service: str) -> bool:
    """Whether brain serves this etcd service yet (probed with an empty call)."""
    with srv.channel() as ch:
        try:
            ch.unary_unary(f"/etcdserverpb.{service}")(b"", timeout=5)
        except grpc.RpcError as e:
            return e.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


@pytest.fixture
def tls_brain(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    srv = brain_server(str(tmp_path), "--transport", "h2", tls=(pki["ca"], pki["server"], pki["server_key"])).start()
    yield srv, pki
    srv.stop()


def _read(*paths: str) -> list[bytes]:
    return [open(p, "rb").read() for p in paths]


def test_tls_client_certificates(tls_brain):
    srv, pki = tls_brain
    ca, cert, key = _read(pki["ca"], pki["client"], pki["client_key"])

    def put(creds):
        ch = grpc.secure_channel(srv.endpoint, creds) if creds else grpc.insecure_channel(srv.endpoint)
        with ch:
            return rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=5).header.revision

    assert put(grpc.ssl_channel_credentials(ca, key, cert)) == 2
    s_cert, s_key = _read(pki["stranger"], pki["stranger_key"])
    for creds in (grpc.ssl_channel_credentials(ca), grpc.ssl_channel_credentials(ca, s_key, s_cert), None):
        with pytest.raises(grpc.RpcError) as e:
            put(creds)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert put(grpc.ssl_channel_credentials(ca, key, cert)) == 3
    base = [etcd_tool("etcdctl"), f"--endpoints=https://{srv.endpoint}", "--cacert", pki["ca"]]
    ok = subprocess.run(base + ["--cert", pki["client"], "--key", pki["client_key"], "put", "a", "1"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "OK", ok.stderr


def test_etcdctl_put_get_txn(brain):
    assert _etcdctl(brain, "put", "foo", "bar").stdout.strip() == "OK"
    assert _etcdctl(brain, "get", "foo").stdout.split() == ["foo", "bar"]
    big = "v" * (1400 * 1024)  # near --max-request-bytes; too long for a command line
    with brain.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"big", value=big.encode()), timeout=10)
    assert _etcdctl(brain, "get", "big", "--print-value-only").stdout.strip() == big
    txn = subprocess.run([etcd_tool("etcdctl"), f"--endpoints={brain.endpoint}", "txn"],
                         input='value("foo") = "bar"\n\nput foo baz\n\nput foo nope\n\n',
                         capture_output=True, text=True, timeout=30)
    assert txn.stdout.split()[0] == "SUCCESS", txn.stderr
    assert _etcdctl(brain, "get", "foo", "--print-value-only").stdout.strip() == "baz"


def test_etcdctl_watch(brain):
    if not _has(brain, "Watch/Watch"):
        pytest.skip("brain has no Watch service yet")
    w = subprocess.Popen([etcd_tool("etcdctl"), f"--endpoints={brain.endpoint}", "watch", "wk"],
                         stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        for i in range(3):
            _etcdctl(brain, "put", "wk", f"v{i}")
        lines = [w.stdout.readline().strip() for _ in range(9)]
        assert lines == ["PUT", "wk", "v0", "PUT", "wk", "v1", "PUT", "wk", "v2"]
    finally:
        w.kill()
        w.wait()


def test_etcdctl_lease_keep_alive(brain):
    if not _has(brain, "Lease/LeaseGrant"):
        pytest.skip("brain has no Lease service yet")
    grant = _etcdctl(brain, "lease", "grant", "10")
    assert grant.returncode == 0, grant.stderr
    lease = grant.stdout.split()[1]
    ka = _etcdctl(brain, "lease", "keep-alive", "--once", lease)
    assert ka.returncode == 0 and "keepalived" in ka.stdout, ka.stderr


@pytest.mark.skipif(not os.path.exists(ETCDLOAD), reason="Go load generator not built")
@pytest.mark.parametrize("workload", ["put", "range_one"])
def test_go_load_generator(brain, workload):
    out = subprocess.run([ETCDLOAD, "-target", brain.endpoint, "-w", workload, "-d", "2s",
                          "-conc", "64", "-conns", "4"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == 0 and result["n"] > 0
