"""Prometheus metrics and /health, under etcd's names where the meaning is the same.

Gauges that describe state (db size, keys, revisions, watchers) are computed
when scraped, by a collector, so they cost nothing on the request path. The
per-request gRPC counters and latency histogram are bound to their label sets
once per method, so a request pays one counter increment and one observation.
Everything lives in a registry owned by the server: no global state.
"""
from __future__ import annotations

import asyncio
import json
import logging
from bisect import bisect_left
from time import perf_counter
from typing import Callable, Iterable

import grpc

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from brain.server.config import ListenURL

log = logging.getLogger(__name__)

# etcd's grpc_server_handling_seconds buckets
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_NAMES = [repr(b) for b in _BUCKETS] + ["+Inf"]


class GrpcMetrics:
    """grpc_server_started_total / handled_total / handling_seconds, as etcd's
    go-grpc-prometheus interceptors export them.

    Kept as plain numbers per method and turned into metric families when
    scraped: a request then pays a few integer additions, where
    prometheus_client's Counter and Histogram take a lock per call."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.methods: list[MethodMetrics] = []
        registry.register(self)

    def method(self, service: str, method: str, kind: str = "unary") -> MethodMetrics:
        m = MethodMetrics(kind, service, method)
        self.methods.append(m)
        return m

    def collect(self) -> Iterable:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily("grpc_server_started", "RPCs started on the server.", labels=labels)
        handled = CounterMetricFamily(
            "grpc_server_handled", "RPCs completed on the server, by status code.", labels=labels + ["grpc_code"]
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds", "Response latency of RPCs handled by the server.", labels=labels
        )
        for m in self.methods:
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
        yield seconds


class MethodMetrics:
    """One method's figures. The event loop is the only writer."""

    __slots__ = ("labels", "started", "ok", "failed_by_code", "buckets", "seconds_sum")

    def __init__(self, kind: str, service: str, method: str) -> None:
        self.labels = [kind, service, method]
        self.started = 0
        self.ok = 0
        self.failed_by_code: dict[str, int] = {}
        self.buckets = [0] * (len(_BUCKETS) + 1)  # the last: +Inf
        self.seconds_sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(_BUCKETS, seconds)] += 1  # le: bound inclusive
        self.seconds_sum += seconds

    def failed(self, code_name: str) -> None:
        self.failed_by_code[code_name] = self.failed_by_code.get(code_name, 0) + 1

    def handled_by_code(self) -> dict[str, int]:
        return {"OK": self.ok, **self.failed_by_code}


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
        fn = getattr(srv.engine, "disk_size", None)
        if fn is not None:
            try:
                size = int(fn())
            except Exception:  # a scrape must never fail because of the engine
                size = 0
        yield GaugeMetricFamily("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", value=1)
        yield GaugeMetricFamily("etcd_server_is_leader", "Whether or not this member is a leader.", value=1)
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
        eng = srv.engine
        if hasattr(eng, "sync_seconds"):
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
    return registry, GrpcMetrics(registry)


class MetricsHTTP:
    """A minimal HTTP/1.1 server for /metrics and /health (etcd's paths)."""

    def __init__(self, registry: CollectorRegistry, healthy: Callable[[], tuple[bool, str]]) -> None:
        self.registry = registry
        self.healthy = healthy
        self.servers: list[asyncio.base_events.Server] = []

    async def start(self, urls: list[ListenURL]) -> list[int]:
        ports = []
        for url in urls:
            srv = await asyncio.start_server(self._handle, url.host, url.port)
            self.servers.append(srv)
            port = srv.sockets[0].getsockname()[1]
            ports.append(port)
            log.info("serving /metrics and /health on http://%s:%d", url.host, port)
        return ports

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path in ("/health", "/livez", "/readyz"):
                ok, reason = self.healthy()
                body = json.dumps({"health": "true" if ok else "false", "reason": reason}, separators=(",", ":")).encode()
                status, ctype = ("200 OK" if ok else "503 Service Unavailable"), "application/json"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"404 page not found\n"
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
    """Counts and times every RPC of every service. The wrapped handler is
    built once per method and cached, so a call costs one dict lookup here."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics
        self._cache: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation, details):
        method = details.method
        try:
            return self._cache[method]
        except KeyError:
            pass
        handler = await continuation(details)
        wrapped = self._wrap(method, handler) if handler is not None else None
        self._cache[method] = wrapped
        return wrapped

    def _wrap(self, method: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        if h.unary_unary is not None:
            m = self.metrics.method(service, name, "unary")
            inner = h.unary_unary

            async def unary(request, context):
                m.started += 1
                t0 = perf_counter()
                try:
                    resp = await inner(request, context)
                except BaseException:
                    _failed(m, context)
                    raise
                m.ok += 1
                m.observe(perf_counter() - t0)
                return resp

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=h.request_deserializer, response_serializer=h.response_serializer
            )
        if h.stream_stream is not None:
            m = self.metrics.method(service, name, "bidi_stream")
            inner_ss = h.stream_stream

            async def bidi(request_iterator, context):
                m.started += 1
                try:
                    result = inner_ss(request_iterator, context)
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            yield item
                    else:
                        await result
                except BaseException:
                    _failed(m, context)
                    raise
                m.ok += 1

            return grpc.stream_stream_rpc_method_handler(
                bidi, request_deserializer=h.request_deserializer, response_serializer=h.response_serializer
            )
        return h


def _failed(m: MethodMetrics, context) -> None:
    code = None
    try:
        code = context.code()
    except Exception:
        pass
    if isinstance(code, grpc.StatusCode):
        m.failed(code.name)
    elif code:
        m.failed(str(code))
    else:
        m.failed("Canceled")
