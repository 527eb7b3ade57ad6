"""TLS like etcd's (--cert-file/--key-file/--trusted-ca-file/--client-cert-auth),
and /metrics and /health on --listen-metrics-urls."""
from __future__ import annotations

import json
import queue
import subprocess
import urllib.request

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from certs import make_pki
from servers import brain_server, etcd_tool, free_port


@pytest.fixture
def tls_brain(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    srv = brain_server(str(tmp_path), tls=(pki["ca"], pki["server"], pki["server_key"])).start()
    yield srv, pki
    srv.stop()


def _put(endpoint: str, creds: grpc.ChannelCredentials | None) -> int:
    ch = grpc.secure_channel(endpoint, creds) if creds else grpc.insecure_channel(endpoint)
    with ch:
        return rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=5).header.revision


def _read(*paths: str) -> list[bytes]:
    return [open(p, "rb").read() for p in paths]


def test_client_certificates(tls_brain):
    srv, pki = tls_brain
    ca, cert, key = _read(pki["ca"], pki["client"], pki["client_key"])
    assert _put(srv.endpoint, grpc.ssl_channel_credentials(ca, key, cert)) == 2
    # no client certificate
    with pytest.raises(grpc.RpcError) as e:
        _put(srv.endpoint, grpc.ssl_channel_credentials(ca))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # a certificate from another CA
    s_cert, s_key = _read(pki["stranger"], pki["stranger_key"])
    with pytest.raises(grpc.RpcError) as e:
        _put(srv.endpoint, grpc.ssl_channel_credentials(ca, s_key, s_cert))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # plaintext to the TLS port
    with pytest.raises(grpc.RpcError) as e:
        _put(srv.endpoint, None)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # nothing but the first put got through
    assert _put(srv.endpoint, grpc.ssl_channel_credentials(ca, key, cert)) == 3


def test_etcdctl_over_tls(tls_brain):
    srv, pki = tls_brain
    base = [etcd_tool("etcdctl"), f"--endpoints=https://{srv.endpoint}", "--cacert", pki["ca"]]
    ok = subprocess.run(base + ["--cert", pki["client"], "--key", pki["client_key"], "put", "a", "1"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "OK", ok.stderr
    bad = subprocess.run(base + ["--dial-timeout=2s", "--command-timeout=3s", "get", "a"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_metrics_and_health(tmp_path):
    mport = free_port()
    srv = brain_server(str(tmp_path), "--listen-metrics-urls", f"http://127.0.0.1:{mport}", "--metrics", "extensive").start()
    try:
        with srv.channel() as ch:
            # one stream with two watchers, open while the writes go on
            watch = rpc_pb2_grpc.WatchStub(ch)
            creates = [rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k", range_end=b"l")),
                       rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k1"))]
            q: queue.Queue = queue.Queue()
            for c in creates:
                q.put(c)
            stream = watch.Watch(iter(q.get, None), timeout=30)
            assert next(stream).created and next(stream).created
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(10):
                kv.Put(rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v"))
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k0"))
            with pytest.raises(grpc.RpcError):
                kv.Range(rpc_pb2.RangeRequest(key=b""))
            # a paged list, both pages at the current revision
            first = kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l", limit=4))
            kv.Range(rpc_pb2.RangeRequest(key=first.kvs[-1].key + b"\0", range_end=b"l", limit=4,
                                          revision=first.header.revision))
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            q.put(None)
            stream.cancel()
        health = urllib.request.urlopen(f"http://127.0.0.1:{mport}/health", timeout=5)
        assert health.status == 200 and json.loads(health.read()) == {"health": "true", "reason": ""}
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        assert values["etcd_server_has_leader"] == 1
        assert values["etcd_debugging_mvcc_keys_total"] == 9
        assert values["etcd_mvcc_current_revision"] == 12
        assert values["etcd_mvcc_db_total_size_in_bytes"] > 0
        key = 'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}'
        assert values[key] == 10
        bad = 'grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}'
        assert values[bad] == 1
        assert values["brain_commit_requests_total"] == 11
        # the watch hub: streams, watchers and its bounded history
        assert values["etcd_debugging_mvcc_watch_stream_total"] == 1
        assert values["etcd_debugging_mvcc_watcher_total"] == 2
        assert values["brain_watch_history_events"] == 11
        assert values["brain_watch_history_bytes"] > 0
        # the key index: 10 creates and a delete logged; both pages at the current revision
        assert values["brain_key_index_log_changes"] == 11
        assert values["brain_range_past_pages_total"] == 0
        assert values["brain_key_index_bytes"] > 9 * 2
        assert 1 <= values["brain_commit_batches_total"] <= 11
        # every commit is one synced engine write, inline or on the write thread
        synced = values['brain_engine_synced_writes_total{where="inline"}'] + values['brain_engine_synced_writes_total{where="thread"}']
        assert synced >= values["brain_commit_batches_total"]
        assert values["brain_engine_sync_seconds_average"] > 0
        # the request latency histogram: every OK Put observed once
        hist = 'grpc_server_handling_seconds_count{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}'
        assert values[hist] == 10
        inf = 'grpc_server_handling_seconds_bucket{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary",le="+Inf"}'
        assert values[inf] == 10
    finally:
        srv.stop()
