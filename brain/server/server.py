"""Assembly: engine -> MVCC store -> gRPC services -> listening sockets."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from brain.errors import NotSupportedForLearnerError
from brain.cluster import ClusterNode, MemberRecord, channel_credentials
from brain.lease import Lessor
from brain.mvcc.kv import Store
from brain.mvcc.store import MVCCStore
from brain.server.alarms import AlarmStore
from brain.server.autocompact import AutoCompactor, parse_retention
from brain.server.config import GRPC_OVERHEAD_BYTES, ServerConfig
from brain.server.header import Header, load_identity
from brain.server.heap import HeapTrimmer
from brain.server.kv import KVService
from brain.server.lease import LeaseService
from brain.server.maintenance import ClusterService, MaintenanceService
from brain.server.migration import MigrationService, mark_cut_over, target_state
from brain.server.metrics import MetricsHTTP, MetricsInterceptor, http_endpoint, new_registry
from brain.server.quota import SpaceQuota, quota_limit
from brain.server.watch import WatchService
from engines import open_engine
from engines.base import Engine
from engines.features import sized

log = logging.getLogger("brain.server")


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        # kube-apiserver pings every 30 s; etcd accepts pings every 5 s
        # (--grpc-keepalive-min-time), while grpcio's defaults would answer
        # such pings with GOAWAY too_many_pings.
        ("grpc.http2.min_ping_interval_without_data_ms", int(config.keepalive_min_time * 1000)),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.keepalive_time_ms", int(config.keepalive_interval * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.max_receive_message_length", config.max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        # never share a port with another process by accident
        ("grpc.so_reuseport", 0),
    ]


def _credentials(config: ServerConfig) -> grpc.ServerCredentials:
    tls = config.tls
    if tls.cipher_suites:
        # grpcio takes its TLS 1.2 suites from the environment, read when
        # its TLS support first loads
        os.environ["GRPC_SSL_CIPHER_SUITES"] = tls.cipher_suites
    with open(tls.key_file, "rb") as f:
        key = f.read()
    with open(tls.cert_file, "rb") as f:
        cert = f.read()
    ca = None
    if tls.trusted_ca_file:
        with open(tls.trusted_ca_file, "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=tls.client_cert_auth
    )


def _h2_tls(config: ServerConfig):
    from brain.transport import server_context

    tls = config.tls
    ctx = server_context(tls.cert_file, tls.key_file, tls.trusted_ca_file, tls.client_cert_auth)
    if tls.cipher_suites:
        ctx.set_ciphers(tls.cipher_suites)
    return ctx


def _metrics_tls(config: ServerConfig) -> ssl.SSLContext:
    """https:// metrics URLs: the client port's certificate, HTTP/1.1 (as etcd
    serves its metrics URLs with the client TLS settings)."""
    tls = config.tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.trusted_ca_file:
        ctx.load_verify_locations(tls.trusted_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_cert_auth else ssl.CERT_OPTIONAL
    if tls.cipher_suites:
        ctx.set_ciphers(tls.cipher_suites)
    return ctx


class ListenError(Exception):
    """A client URL cannot be listened on (in use, not this host's, no permission)."""


class StartRefused(Exception):
    """The server must not start with this configuration and data directory."""


class BrainServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: Engine | None = None
        self.store: Store | None = None
        self.lessor: Lessor | None = None
        self.watch: WatchService | None = None
        self.grpc: grpc.aio.Server | None = None
        self.header: Header | None = None
        self.ports: list[int] = []
        self.metrics_ports: list[int] = []
        self.registry, self.grpc_metrics = new_registry(self)
        self.metrics_http: MetricsHTTP | None = None
        # (name, help, value) gauges that other parts (watch hub, lessor) add
        self.gauge_sources: list = []
        self.heap = HeapTrimmer()
        self.alarms: AlarmStore | None = None
        self.quota: SpaceQuota | None = None
        self.auto_compactor: AutoCompactor | None = None
        self.cluster: ClusterNode | None = None
        self.leases: LeaseService | None = None

    def extra_gauges(self) -> list[tuple[str, str, float]]:
        out: list[tuple[str, str, float]] = []
        for source in self.gauge_sources:
            out.extend(source())
        return out

    def healthy(self) -> tuple[bool, str]:
        """etcd's /health: the store answers and its writer is alive."""
        store = self.store
        if store is None:
            return False, "not started"
        if not store.writer_running():
            return False, "writer stopped"
        return True, ""

    async def http_get(self, path: str) -> tuple[int, str, bytes]:
        """GETs on the client URLs, as etcd answers them beside gRPC."""
        return http_endpoint(path, self.registry, self.healthy, self.config.version)

    async def start(self) -> None:
        cfg = self.config
        self.engine = open_engine(cfg.engine, data_dir=cfg.data_dir, **cfg.engine_options)
        log.info("engine %s opened (data dir %s, durable=%s)", cfg.engine, cfg.data_dir if cfg.engine != "memory" else "-", self.engine.durable)
        self.store = store = await MVCCStore.open(self.engine, sync=cfg.sync_writes)
        # an engine several brain processes share serves them as one
        # cluster (brain/cluster): members differ by name and client URL
        shared = self.engine.features.shared
        identity = f"{cfg.name}@{','.join(cfg.client_urls())}" if shared else cfg.name
        cluster_id, member_id = await load_identity(self.engine, identity)
        self.header = header = Header(store, cluster_id, member_id)
        migrating = await self._migration_mode(shared)
        lessor = None
        if migrating:
            # no lessor until the cut-over: the source's leases are copied
            # as records, and expire here only once brain is the store
            store.writes_refused = NotSupportedForLearnerError
        elif not shared:  # in a cluster, the leader's lessor (brain/cluster/node.py)
            self.lessor = lessor = await Lessor.open(store)
            store.lease_exists = lessor.exists
            self.gauge_sources.append(lessor.gauges)
        log.info("store at revision %d (compacted at %d); cluster %x member %x", store.rev, store.compact_rev, cluster_id, member_id)
        self.alarms = alarms = await AlarmStore.open(self.engine, cfg.sync_writes)
        self.quota = quota = SpaceQuota(quota_limit(cfg.quota_backend_bytes), alarms, member_id, sized(self.engine),
                                        cfg.max_request_bytes + GRPC_OVERHEAD_BYTES, cfg.quota_measure_interval)
        await quota.start()

        if cfg.transport == "h2":
            from brain.transport import Server as H2Server

            server = H2Server(
                options=grpc_options(cfg), interceptors=[MetricsInterceptor(self.grpc_metrics)], http_handler=self.http_get
            )
        else:
            server = grpc.aio.server(options=grpc_options(cfg), interceptors=[MetricsInterceptor(self.grpc_metrics)])
        self.watch = WatchService(store, header, cfg.progress_notify_interval, cfg.max_request_bytes)
        self.gauge_sources.append(self.watch.hub.gauges)
        kv = KVService(store, header, cfg.max_request_bytes, cfg.max_txn_ops, self.heap, quota)
        self.leases = leases = LeaseService(lessor, header, quota)  # type: ignore[arg-type]  # None until a cluster member leads or a migration cuts over
        if migrating:
            leases.refused = NotSupportedForLearnerError
        if shared:
            me = MemberRecord(member_id, cfg.name, cfg.client_urls())
            self.cluster = ClusterNode(self.engine, store, leases, me, credentials=channel_credentials(cfg.tls))
            self.gauge_sources.append(self.cluster.gauges)
            kv.read_barrier = self.cluster.read_barrier
        handlers = [
            kv.handler(),
            self.watch.handler(),
            leases.handler(),
            MaintenanceService(store, self.engine, header, cfg, alarms, self.cluster).handler(),
            ClusterService(header, cfg, self.cluster).handler(),
            MigrationService(store, self.engine, migrating, self._cut_over).handler(),
        ]
        server.add_generic_rpc_handlers(self.cluster.forwarder.wrap(handlers) if self.cluster is not None else handlers)
        hs = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(hs, server)
        await hs.set("", health_pb2.HealthCheckResponse.SERVING)
        for url in cfg.listen_client_urls:
            try:
                if url.scheme == "https":
                    port = server.add_secure_port(url.address, _h2_tls(cfg) if cfg.transport == "h2" else _credentials(cfg))
                else:
                    port = server.add_insecure_port(url.address)
            except OSError as e:  # brain's transport
                raise ListenError(f"listen tcp {url.address}: bind: {(e.strerror or str(e)).lower()}") from None
            except RuntimeError as e:  # grpcio: "Failed to bind to address"
                raise ListenError(f"listen tcp {url.address}: bind: {e}") from None
            self.ports.append(port)
        await server.start()
        self.grpc = server
        if self.cluster is not None:
            await self.cluster.start()
        for url, port in zip(cfg.listen_client_urls, self.ports):
            log.info("serving etcd v3 API on %s://%s:%d", url.scheme, url.host, port)
        if cfg.listen_metrics_urls:
            self.metrics_http = MetricsHTTP(self.registry, self.healthy)
            metrics_tls = _metrics_tls(cfg) if any(u.scheme == "https" for u in cfg.listen_metrics_urls) else None
            self.metrics_ports = await self.metrics_http.start(cfg.listen_metrics_urls, metrics_tls)
        if not migrating:
            self._start_auto_compaction()

    def _start_auto_compaction(self) -> None:
        cfg = self.config
        retention = parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)
        if retention > 0:  # as etcd: a retention of 0 runs no compactor
            self.auto_compactor = AutoCompactor(self.store, cfg.auto_compaction_mode, retention,  # type: ignore[arg-type]
                                                cfg.auto_compaction_revision_interval)
            self.auto_compactor.start()

    async def _migration_mode(self, shared: bool) -> bool:
        """Whether this server starts as a migration's target (see
        brain/server/migration.py). A migrated store served without
        --migration-target is cut over: no migration may go on into it."""
        assert self.engine is not None
        state = await target_state(self.engine)
        if not self.config.migration_target:
            if state == "migrating":
                log.warning("this store was migrated from etcd and is now served writable: the migration is cut over")
                await mark_cut_over(self.engine)
            return False
        if shared:
            raise StartRefused("--migration-target needs an engine of its own (not one shared by several brain processes)")
        if state == "other":
            raise StartRefused("--migration-target: the data directory holds keys, revisions or leases of its own; "
                               "a migration needs an empty one")
        if state == "cut over":
            log.warning("--migration-target: the migration into this store was cut over; serving it writable")
            return False
        log.info("migration target: client writes are refused until the migration's cut-over (%s)",
                 "carrying on" if state == "migrating" else "empty store")
        return True

    async def _cut_over(self) -> None:
        """The migration is complete: take writes, run leases and compaction."""
        store, leases = self.store, self.leases
        assert store is not None and leases is not None
        self.lessor = lessor = await Lessor.open(store)
        store.lease_exists = lessor.exists
        self.gauge_sources.append(lessor.gauges)
        leases.lessor = lessor
        leases.refused = None
        store.writes_refused = None
        self._start_auto_compaction()

    async def stop(self, grace: float = 5.0) -> None:
        """Drain in-flight requests, flush queued writes, close the engine."""
        if self.metrics_http is not None:
            await self.metrics_http.stop()
        if self.watch is not None:
            # watch streams never end by themselves: end them now, as etcd
            # does, rather than hold the shutdown for the whole grace period
            self.watch.hub.close()
        if self.grpc is not None:
            await self.grpc.stop(grace)
        if self.cluster is not None:
            await self.cluster.stop()
        self.heap.close()
        if self.auto_compactor is not None:
            await self.auto_compactor.stop()
        if self.quota is not None:
            await self.quota.stop()
        if self.lessor is not None:
            await self.lessor.stop()
        if self.store is not None:
            await self.store.close()
        if self.engine is not None:
            await self.engine.close()
        log.info("stopped")


async def serve(config: ServerConfig) -> None:
    server = BrainServer(config)
    await server.start()
    # What exists after startup lives as long as the server: move it out of
    # the collector's sight. And collect the oldest generation far less
    # often: full collections of a large heap (watchers, history, leases)
    # stalled the event loop, which showed as watch delivery lag (README,
    # Performance: "Measurements behind the defaults"). Python's own rule
    # still runs a full collection when the long-lived objects have grown by
    # a quarter. The middle generation is collected every other young
    # collection: it holds the watch history's newest events, and letting
    # ten young collections' worth pile up made each of its collections a
    # stall of its own; the oldest generation's threshold is raised as much,
    # so full collections come as seldom as before.
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 2, 500)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
