"""brain's /metrics held against etcd 3.5's for every family etcd's own
dashboard and alert rules query: both servers do the same requests, both are
scraped, and each family must exist on both with the same type, label names
and label values from the same vocabulary (Go's gRPC code names, etcd's
method names, etcd's histogram buckets)."""
from __future__ import annotations

import queue
import re
import time
import urllib.request
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import ServerProcess, brain_server, etcd_server, free_port

# Every series name the etcd mixin's alert rules and Grafana dashboard query,
# from etcd-io/etcd contrib/mixin/alerts/alerts.libsonnet and
# contrib/mixin/dashboards/targets.libsonnet (the Grafana 7 dashboard,
# contrib/mixin/dashboards/etcd-grafana7x.libsonnet, queries the same ones).
MIXIN_QUERIED = (
    # alerts
    "etcd_network_peer_sent_failures_total",
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "etcd_network_peer_round_trip_time_seconds_bucket",
    "etcd_server_proposals_failed_total",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    # dashboard panels
    "grpc_server_started_total",
    "process_resident_memory_bytes",
    "etcd_network_client_grpc_received_bytes_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_sent_bytes_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
)
# and what operators commonly read next to them
ALSO_COMPARED = (
    "etcd_server_version",
    "etcd_server_is_leader",
    "etcd_debugging_mvcc_keys_total",
    "process_cpu_seconds_total",
    "process_open_fds",
)
# labels whose values name the instance, not a vocabulary
INSTANCE_LABELS = {"server_version"}

PUTS = 5


@dataclass
class Scrape:
    families: list

    def family(self, queried: str):
        """The family a query's series name belongs to (a counter's family
        drops _total; a histogram's series add _bucket, _count, _sum)."""
        for f in self.families:
            names = {f.name} | {s.name for s in f.samples}
            if f.type == "counter":
                names.add(f.name + "_total")
            if f.type == "histogram":
                names |= {f.name + "_bucket", f.name + "_count", f.name + "_sum"}
            if queried in names:
                return f
        return None

    def value(self, name: str, **labels: str) -> float:
        for f in self.families:
            for s in f.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        raise KeyError(f"{name}{labels}")

    def nonzero(self, name: str) -> set[tuple]:
        f = self.family(name)
        assert f is not None, name
        return {tuple(sorted(s.labels.items())) for s in f.samples if s.name == name and s.value > 0}


def scrape(port: int) -> Scrape:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return Scrape(list(text_string_to_metric_families(text)))


def label_names(family) -> set[str]:
    return {k for s in family.samples for k in s.labels if k != "le"}


def label_values(family) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in family.samples:
        for k, v in s.labels.items():
            out.setdefault(k, set()).add(v)
    return out


def same_requests(srv: ServerProcess) -> None:
    """Puts, a range, two requests etcd fails (a future revision:
    OutOfRange; an unknown lease: NotFound) and a watch stream the client
    cancels (Canceled)."""
    with srv.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(PUTS):
            kv.Put(rpc_pb2.PutRequest(key=b"key%d" % i, value=b"value"), timeout=10)
        kv.Range(rpc_pb2.RangeRequest(key=b"key", range_end=b"kez"), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            kv.Range(rpc_pb2.RangeRequest(key=b"key0", revision=1000), timeout=10)
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
        with pytest.raises(grpc.RpcError) as e:
            rpc_pb2_grpc.LeaseStub(ch).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=12345), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        requests: queue.Queue = queue.Queue()
        requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"key0")))
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter(requests.get, None), timeout=30)
        assert next(stream).created
        stream.cancel()


def scrape_when_watch_ended(port: int) -> Scrape:
    """A scrape once the server has counted the cancelled watch stream as
    handled (the cancellation reaches it asynchronously)."""
    for _ in range(200):
        got = scrape(port)
        handled = sum(s.value for s in got.family("grpc_server_handled_total").samples
                      if s.labels.get("grpc_method") == "Watch" and s.labels.get("grpc_service") == "etcdserverpb.Watch")
        if handled >= 1:
            return got
        time.sleep(0.05)
    raise AssertionError("the watch stream was never counted as handled")


@pytest.fixture(scope="module", params=["h2", "grpcio"])
def scrapes(request, tmp_path_factory) -> tuple[Scrape, Scrape]:
    """etcd's and brain's scrapes after the same requests; brain on each of
    its gRPC servers, whose handlers the metrics interceptor wraps alike."""
    tmp = str(tmp_path_factory.mktemp("metrics-compat"))
    etcd_port, brain_port = free_port(), free_port()
    # etcd exports grpc_server_handling_seconds (the slow-requests alert's)
    # only with --metrics extensive, and so does brain
    etcd = etcd_server(tmp, "--listen-metrics-urls", f"http://127.0.0.1:{etcd_port}", "--metrics", "extensive").start()
    brain = brain_server(tmp, "--listen-metrics-urls", f"http://127.0.0.1:{brain_port}", "--transport", request.param,
                         "--metrics", "extensive")
    try:
        brain.start()
        same_requests(etcd)
        same_requests(brain)
        return scrape_when_watch_ended(etcd_port), scrape_when_watch_ended(brain_port)
    finally:
        brain.stop()
        etcd.stop()


@pytest.mark.parametrize("queried", MIXIN_QUERIED + ALSO_COMPARED)
def test_family_matches_etcd(scrapes, queried):
    etcd, brain = scrapes
    ef, bf = etcd.family(queried), brain.family(queried)
    assert bf is not None, f"brain has no family for {queried}"
    if ef is None or not ef.samples:
        # a one-member etcd has no peers and prints nothing for the peer
        # families: brain declares them with no samples either
        assert not bf.samples, f"{queried}: etcd has no samples, brain has {bf.samples[:3]}"
        return
    assert bf.samples, f"{queried}: etcd has samples, brain none"
    assert (bf.name, bf.type) == (ef.name, ef.type)
    assert label_names(bf) == label_names(ef)
    etcd_values = label_values(ef)
    for label, values in label_values(bf).items():
        if label in INSTANCE_LABELS:
            assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in values), values
            continue
        assert values <= etcd_values[label], f"{queried}: {label} values {sorted(values - etcd_values[label])} are not etcd's"
    if bf.type == "histogram":
        assert label_values(bf)["le"] == etcd_values["le"], f"{queried}: buckets differ"


@pytest.mark.parametrize("name", ["grpc_server_handled_total", "grpc_server_started_total"])
def test_same_requests_count_under_the_same_labels(scrapes, name):
    """The series the requests moved are the same on both: OK for the puts
    and ranges, OutOfRange for the future revision, NotFound for the unknown
    lease, Canceled for the watch stream, under etcd's method names."""
    etcd, brain = scrapes
    assert brain.nonzero(name) == etcd.nonzero(name)
    put = {"grpc_method": "Put", **({"grpc_code": "OK"} if name == "grpc_server_handled_total" else {})}
    assert (etcd.value(name, **put), brain.value(name, **put)) == (PUTS, PUTS)


def test_every_method_and_code_is_listed_as_etcd_lists_them(scrapes):
    """go-grpc-prometheus lists each method with every code from the start,
    so rate() over a code that has not happened yet is 0, not absent."""
    etcd, brain = scrapes
    def series(s: Scrape) -> set[tuple]:
        f = s.family("grpc_server_handled_total")
        return {tuple(sorted(x.labels.items())) for x in f.samples}
    assert series(brain) == series(etcd)


def test_state_values_agree(scrapes):
    etcd, brain = scrapes
    for name in ("etcd_server_has_leader", "etcd_server_is_leader", "etcd_debugging_mvcc_keys_total"):
        assert brain.value(name) == etcd.value(name), name
    assert brain.value("etcd_server_quota_backend_bytes") == etcd.value("etcd_server_quota_backend_bytes") == 2 * 1024**3
    assert brain.value("etcd_server_proposals_failed_total") == etcd.value("etcd_server_proposals_failed_total") == 0
    assert brain.value("etcd_server_proposals_pending") == 0


def test_write_metrics_move(tmp_path):
    """After N puts: N more proposals committed and applied, at least N
    more WAL fsyncs and backend commits timed, and the client bytes grew."""
    port = free_port()
    srv = brain_server(str(tmp_path), "--listen-metrics-urls", f"http://127.0.0.1:{port}", "--metrics", "extensive").start()
    try:
        before = scrape(port)
        with srv.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(20):
                kv.Put(rpc_pb2.PutRequest(key=b"moving%d" % i, value=b"x" * 100), timeout=10)
        after = scrape(port)
    finally:
        srv.stop()

    def rose(name: str) -> float:
        return after.value(name) - before.value(name)

    assert rose("etcd_server_proposals_committed_total") == 20
    assert rose("etcd_server_proposals_applied_total") == 20
    assert after.value("etcd_server_proposals_pending") == 0
    assert rose("etcd_disk_wal_fsync_duration_seconds_count") >= 20
    assert rose("etcd_disk_wal_fsync_duration_seconds_sum") > 0
    assert rose("etcd_disk_backend_commit_duration_seconds_count") >= 20
    assert after.value("etcd_disk_wal_fsync_duration_seconds_bucket", le="+Inf") == after.value(
        "etcd_disk_wal_fsync_duration_seconds_count")
    assert rose("etcd_network_client_grpc_received_bytes_total") >= 20 * 100
    assert rose("etcd_network_client_grpc_sent_bytes_total") > 0
    assert after.value("grpc_server_handling_seconds_count", grpc_method="Put") == 20


def test_latency_histogram_only_with_extensive(tmp_path):
    """As etcd: --metrics basic (the default) leaves grpc_server_handling_seconds out."""
    tmp = str(tmp_path)
    found = {}
    for kind, extra in (("etcd", ()), ("brain", ()), ("brain-extensive", ("--metrics", "extensive"))):
        port = free_port()
        start = etcd_server if kind == "etcd" else brain_server
        srv = start(tmp, "--listen-metrics-urls", f"http://127.0.0.1:{port}", *extra).start()
        try:
            with srv.channel() as ch:
                rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
            found[kind] = scrape(port).family("grpc_server_handling_seconds_count") is not None
        finally:
            srv.stop()
    assert found == {"etcd": False, "brain": False, "brain-extensive": True}


def test_unknown_paths_are_not_remembered():
    """grpcio's interceptor builds a wrapped handler once per known method;
    a path no service has must leave nothing behind, or a client sending
    endless new paths grows the server's memory without bound."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from brain.server.metrics import GrpcMetrics, MetricsInterceptor

    interceptor = MetricsInterceptor(GrpcMetrics(CollectorRegistry()))

    @dataclass
    class Details:
        method: str

    async def unknown(details):
        return None

    known_handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)

    async def known(details):
        return known_handler

    async def main() -> None:
        for i in range(1000):
            assert await interceptor.intercept_service(unknown, Details(f"/x.Y/Z{i}")) is None
        first = await interceptor.intercept_service(known, Details("/etcdserverpb.KV/Range"))
        assert first is not None
        assert await interceptor.intercept_service(unknown, Details("/etcdserverpb.KV/Range")) is first
    asyncio.run(main())
    assert len(interceptor._cache) == 1
