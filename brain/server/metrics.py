"""Prometheus metrics and /health, under etcd's names where the meaning is the same.

Gauges that describe state (db size, keys, revisions, watchers) are computed
when scraped, by a collector, so they cost nothing on the request path. The
per-request gRPC counters and latency histogram are bound to their label sets
once per method, so a request pays one counter increment and one observation.
Everything lives in a registry owned by the server: no global state.

The gRPC families follow go-grpc-prometheus as etcd uses it: every method
of etcd's services (and the health service) is listed from the start, with
every status code under Go's name (OK, OutOfRange, Unavailable, ...), so
etcd's dashboards and alert rules select the same series on brain. The
etcd_* families etcd's dashboards and alerts read are in metrics_etcd.py.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from bisect import bisect_left
from time import perf_counter
from typing import Callable, Iterable

import grpc

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from brain.etcdpb import rpc_pb2
from brain.server.config import ListenURL
from brain.server.metrics_etcd import EtcdCollector, go_float
from engines.features import sized, sync_counting

log = logging.getLogger(__name__)

# etcd's grpc_server_handling_seconds buckets
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_NAMES = [go_float(b) for b in _BUCKETS] + ["+Inf"]

# gRPC status codes under the names Go's codes.Code.String() gives them,
# which go-grpc-prometheus puts in grpc_code; in Go's order
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

# the health service brain serves next to etcd's, as etcd does
_HEALTH_METHODS = (("grpc.health.v1.Health", "Check", "unary"), ("grpc.health.v1.Health", "Watch", "server_stream"))


def _grpc_type(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


def etcd_methods() -> list[tuple[str, str, str]]:
    """(service, method, grpc_type) of every method etcd serves, from its proto."""
    out = []
    for service in rpc_pb2.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            out.append((service.full_name, m.name, _grpc_type(m.client_streaming, m.server_streaming)))
    out.extend(_HEALTH_METHODS)
    return out


class GrpcMetrics:
    """grpc_server_started_total / handled_total / handling_seconds, as etcd's
    go-grpc-prometheus interceptors export them.

    Kept as plain numbers per method and turned into metric families when
    scraped: a request then pays a few integer additions, where
    prometheus_client's Counter and Histogram take a lock per call."""

    def __init__(self, registry: CollectorRegistry, extensive: bool = False) -> None:
        # etcd exports the latency histogram only with --metrics extensive
        self.extensive = extensive
        self.methods: dict[tuple[str, str], MethodMetrics] = {}
        # message bytes from and to clients (etcd_network_client_grpc_*_bytes_total)
        self.received_bytes = 0
        self.sent_bytes = 0
        for service, method, kind in etcd_methods():
            self.method(service, method, kind)
        registry.register(self)

    def method(self, service: str, method: str, kind: str = "unary") -> MethodMetrics:
        m = self.methods.get((service, method))
        if m is None or m.labels[0] != kind:
            m = self.methods[(service, method)] = MethodMetrics(kind, service, method)
        return m

    def counting_deserializer(self, deserialize: Callable[[bytes], object] | None) -> Callable[[bytes], object]:
        def counted(raw: bytes) -> object:
            self.received_bytes += len(raw)
            return deserialize(raw) if deserialize is not None else raw

        return counted

    def counting_serializer(self, serialize: Callable[[object], bytes] | None) -> Callable[[object], bytes]:
        def counted(message: object) -> bytes:
            raw = serialize(message) if serialize is not None else message
            self.sent_bytes += len(raw)  # type: ignore[arg-type]
            return raw  # type: ignore[return-value]

        return counted

    def collect(self) -> Iterable:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily("grpc_server_started", "RPCs started on the server.", labels=labels)
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            labels=labels + ["grpc_code"],
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds", "Response latency of RPCs handled by the server.", labels=labels
        )
        for m in self.methods.values():
            started.add_metric(m.labels, m.started)
            for code, n in m.handled_by_code().items():
                handled.add_metric(m.labels + [code], n)
            cumulative, buckets = 0, []
            for bound, n in zip(_BUCKET_NAMES, m.buckets):
                cumulative += n
                buckets.append((bound, cumulative))
            seconds.add_metric(m.labels, buckets, m.seconds_sum)
        yield started
        yield handled
        if self.extensive:
            yield seconds
        yield CounterMetricFamily(
            "etcd_network_client_grpc_received_bytes", "Bytes of request messages received from gRPC clients.",
            value=self.received_bytes,
        )
        yield CounterMetricFamily(
            "etcd_network_client_grpc_sent_bytes", "Bytes of response messages sent to gRPC clients.", value=self.sent_bytes
        )


class MethodMetrics:
    """One method's figures. The event loop is the only writer."""

    __slots__ = ("labels", "started", "ok", "failed_by_code", "buckets", "seconds_sum")

    def __init__(self, kind: str, service: str, method: str) -> None:
        self.labels = [kind, service, method]
        self.started = 0
        self.ok = 0
        self.failed_by_code: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(_BUCKETS) + 1)  # the last: +Inf
        self.seconds_sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(_BUCKETS, seconds)] += 1  # le: bound inclusive
        self.seconds_sum += seconds

    def failed(self, code: grpc.StatusCode) -> None:
        self.failed_by_code[code] = self.failed_by_code.get(code, 0) + 1

    def handled_by_code(self) -> dict[str, int]:
        """Every code, zeros included, as go-grpc-prometheus initialises them."""
        failed = self.failed_by_code
        counts = {name: failed.get(code, 0) for code, name in GO_CODE_NAMES.items()}
        counts["OK"] += self.ok
        return counts


class StateCollector:
    """State read at scrape time from the store, the engine and the watch hub."""

    def __init__(self, server) -> None:
        self.server = server

    def collect(self) -> Iterable:
        srv = self.server
        store = srv.store
        if store is None:
            return
        size = 0
        measured = sized(srv.engine)
        if measured is not None:
            try:
                size = measured.disk_size()
            except Exception:  # a scrape must never fail because of the engine
                size = 0
        cluster = getattr(srv, "cluster", None)  # several processes on one engine (brain/cluster)
        has_leader = 1 if cluster is None or cluster.leader_id else 0
        is_leader = 1 if cluster is None or cluster.serves_locally() else 0
        yield GaugeMetricFamily("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", value=has_leader)
        yield GaugeMetricFamily("etcd_server_is_leader", "Whether or not this member is a leader.", value=is_leader)
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database in bytes.", value=size)
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_use_in_bytes", "Size of the database in use in bytes.", value=size)
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total", "Total number of keys.", value=store.keys_total)
        yield GaugeMetricFamily("etcd_mvcc_current_revision", "The current revision of the store.", value=store.rev)
        yield GaugeMetricFamily("etcd_debugging_mvcc_current_revision", "The current revision of the store.", value=store.rev)
        yield GaugeMetricFamily("etcd_mvcc_compact_revision", "The revision of the last compaction.", value=store.compact_rev)
        yield GaugeMetricFamily("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction.", value=store.compact_rev)
        yield CounterMetricFamily("brain_commit_batches", "Engine commits made by the group-commit writer.", value=store.batches)
        yield CounterMetricFamily(
            "brain_commit_requests", "Write requests committed by the group-commit writer.", value=store.batched_requests
        )
        avg = store.batched_requests / store.batches if store.batches else 0.0
        yield GaugeMetricFamily("brain_commit_batch_size_average", "Mean write requests per engine commit.", value=avg)
        c = store.compactor
        yield GaugeMetricFamily("brain_compaction_finished_revision", "Highest revision physically compacted.", value=c.finished)
        yield CounterMetricFamily("brain_compaction_runs", "Compactions finished.", value=c.runs)
        yield CounterMetricFamily("brain_compaction_removed_versions", "History versions removed by compaction.", value=c.removed_versions)
        index = store.index
        yield GaugeMetricFamily("brain_key_index_log_changes", "Changes the key index holds for reads at older revisions.", value=index.log_size)
        yield GaugeMetricFamily("brain_key_index_past_changes", "Corrections held for reads at older revisions (paged lists).", value=index.past_changes)
        yield GaugeMetricFamily("brain_key_index_bytes", "Estimated memory of the key index.", value=index.estimated_bytes)
        yield CounterMetricFamily("brain_range_past_pages", "Range pages answered at an older revision from the key index.", value=index.past_hits)
        eng = sync_counting(srv.engine)
        if eng is not None:
            yield GaugeMetricFamily(
                "brain_engine_sync_seconds_average", "Moving average of the engine's synced writes' duration.", value=eng.sync_seconds
            )
            synced = CounterMetricFamily("brain_engine_synced_writes", "Synced engine writes, by where they ran.", labels=["where"])
            synced.add_metric(["inline"], eng.synced_inline)
            synced.add_metric(["thread"], eng.synced_on_thread)
            yield synced
        for name, help_, value in srv.extra_gauges():
            yield GaugeMetricFamily(name, help_, value=value)


def new_registry(server) -> tuple[CollectorRegistry, GrpcMetrics]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(server))
    registry.register(EtcdCollector(server))
    # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...
    ProcessCollector(registry=registry)
    return registry, GrpcMetrics(registry, extensive=getattr(server.config, "metrics_extensive", False))


def http_endpoint(
    path: str, registry: CollectorRegistry, healthy: Callable[[], tuple[bool, str]], version: str | None = None,
) -> tuple[int, str, bytes]:
    """etcd's HTTP paths: status, content type and body for a GET of path.
    /version only where a server version is given (etcd serves it on client
    URLs, not on metrics URLs)."""
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if path in ("/health", "/livez", "/readyz"):
        ok, reason = healthy()
        body = json.dumps({"health": "true" if ok else "false", "reason": reason}, separators=(",", ":")).encode()
        return (200 if ok else 503), "application/json", body
    if path == "/version" and version is not None:
        major, minor = version.split(".")[:2]
        body = json.dumps({"etcdserver": version, "etcdcluster": f"{major}.{minor}.0"}, separators=(",", ":")).encode()
        return 200, "application/json", body
    return 404, "text/plain; charset=utf-8", b"404 page not found\n"


class MetricsHTTP:
    """A minimal HTTP/1.1 server for /metrics and /health (etcd's paths)."""

    def __init__(self, registry: CollectorRegistry, healthy: Callable[[], tuple[bool, str]]) -> None:
        self.registry = registry
        self.healthy = healthy
        self.servers: list[asyncio.base_events.Server] = []

    async def start(self, urls: list[ListenURL], tls: ssl.SSLContext | None = None) -> list[int]:
        ports = []
        for url in urls:
            srv = await asyncio.start_server(self._handle, url.host, url.port, ssl=tls if url.scheme == "https" else None)
            self.servers.append(srv)
            port = srv.sockets[0].getsockname()[1]
            ports.append(port)
            log.info("serving /metrics and /health on %s://%s:%d", url.scheme, url.host, port)
        return ports

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            code, ctype, body = http_endpoint(path, self.registry, self.healthy)
            status = {200: "200 OK", 503: "503 Service Unavailable"}.get(code, "404 Not Found")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for srv in self.servers:
            srv.close()
            await srv.wait_closed()


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC of every service, and the bytes of its
    messages. The wrapped handler is built once per method and cached, so a
    call costs one dict lookup here."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):
        method = details.method
        try:
            return self._cache[method]
        except KeyError:
            pass
        handler = await continuation(details)
        if handler is None:
            # an unknown path is not remembered: a client could send
            # endless new ones
            return None
        wrapped = self._cache[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        metrics = self.metrics
        codecs = {
            "request_deserializer": metrics.counting_deserializer(h.request_deserializer),
            "response_serializer": metrics.counting_serializer(h.response_serializer),
        }
        if h.unary_unary is not None:
            m = metrics.method(service, name, "unary")
            inner = h.unary_unary

            async def unary(request, context):
                m.started += 1
                t0 = perf_counter()
                try:
                    resp = await inner(request, context)
                except BaseException as e:
                    _failed(m, context, e)
                    m.observe(perf_counter() - t0)
                    raise
                m.ok += 1
                m.observe(perf_counter() - t0)
                return resp

            return grpc.unary_unary_rpc_method_handler(unary, **codecs)
        if h.unary_stream is not None:
            m = metrics.method(service, name, "server_stream")
            return grpc.unary_stream_rpc_method_handler(_counted_stream(m, h.unary_stream), **codecs)
        if h.stream_stream is not None:
            m = metrics.method(service, name, "bidi_stream")
            return grpc.stream_stream_rpc_method_handler(_counted_stream(m, h.stream_stream), **codecs)
        return h


def _counted_stream(m: MethodMetrics, inner: Callable) -> Callable:
    """A streaming handler (server or bidirectional: the first argument is the
    request or the request iterator) counted and timed as a whole call."""

    async def stream(first, context):
        m.started += 1
        t0 = perf_counter()
        try:
            result = inner(first, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result
        except BaseException as e:
            _failed(m, context, e)
            m.observe(perf_counter() - t0)
            raise
        m.ok += 1
        m.observe(perf_counter() - t0)

    return stream


def _failed(m: MethodMetrics, context, error: BaseException) -> None:
    """Count a call that raised, under the status it ends with: the one the
    handler set, else Canceled for a cancelled call and Unknown otherwise
    (what gRPC answers for an exception)."""
    code = None
    try:
        code = context.code()
    except Exception:
        pass
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            code = grpc.StatusCode.CANCELLED
        else:
            code = grpc.StatusCode.UNKNOWN
    m.failed(code)
