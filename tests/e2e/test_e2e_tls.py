"""The TLS variant: the store serves https and requires client certificates
(--client-cert-auth); kube-apiserver connects with --etcd-cafile, --etcd-certfile
and --etcd-keyfile."""
from __future__ import annotations

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from e2e_cluster import SKIP_MESSAGE, backends, start_cluster, stop_cluster
from e2e_checks import configmap_roundtrip, create_namespace, watch_sequence
from kube_e2e import ETCD_ERROR_PATTERNS, env_binaries, lines_matching, scan_log

pytestmark = [pytest.mark.needs_apiserver, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", params=backends())
def tls_cluster(request, tmp_path_factory):
    if not env_binaries()[0]:
        pytest.skip(SKIP_MESSAGE)
    c = start_cluster(request.param, str(tmp_path_factory.mktemp(f"e2e-tls-{request.param}")), tls=True)
    yield c
    stop_cluster(c)


def test_tls_store_requires_client_certificates(tls_cluster):
    store = tls_cluster.store
    assert store.etcd_servers.startswith("https://")
    ca = open(store.client_tls[0], "rb").read()
    with grpc.secure_channel(store.server.endpoint, grpc.ssl_channel_credentials(ca)) as ch:
        with pytest.raises(grpc.RpcError):
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/registry/namespaces/default"), timeout=5)
    # with the client certificate the apiserver's data is there
    assert store.get("/registry/namespaces/default").kvs


def test_tls_ready_and_crud(tls_cluster):
    api = tls_cluster.api
    status, body = api.readyz()
    assert status == 200, body
    assert api.etcd_health() == (200, "ok")
    create_namespace(api, "tls-crud")
    configmap_roundtrip(api, tls_cluster.store, "tls-crud", "over-tls")


def test_tls_watch(tls_cluster):
    create_namespace(tls_cluster.api, "tls-watch")
    watch_sequence(tls_cluster.api, "tls-watch", "watched")


def test_tls_readyz_and_log(tls_cluster):
    assert not tls_cluster.monitor.unexpected(), tls_cluster.monitor.unexpected()[:10]
    bad = scan_log(tls_cluster.api.log_path, tls_cluster.log_windows, ignore=tls_cluster.known_lacks())
    assert not bad, "etcd errors in the kube-apiserver log:\n" + "\n".join(bad[:40])
    for name in tls_cluster.known_lacks():
        if name in {n for n, _, _ in ETCD_ERROR_PATTERNS}:
            assert lines_matching(tls_cluster.api.log_path, name)
