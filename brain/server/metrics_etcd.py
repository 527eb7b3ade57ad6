"""The etcd_* families etcd's Grafana dashboard and alert rules read
(etcd-io/etcd contrib/mixin), under etcd 3.5's names, types and labels.

All are read when scraped from plain numbers that the store and the engine
keep (no prometheus_client metric objects on the write path, whose updates
take a lock). What raft measures in etcd maps onto brain's single writer:
- proposals: each write request through the store's writer (a put, delete,
  txn or compaction) is one, committed once its batch is durable;
- etcd_disk_wal_fsync_duration_seconds: the syncs that make a commit
  durable (the write-ahead log's fdatasync);
- etcd_disk_backend_commit_duration_seconds: the engine's commits;
- leader: a brain server is the only member and leads from its start, as a
  one-member etcd does;
- peers: a one-member cluster has none, so the peer families have no samples.
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from engines.features import timed
from engines.timings import DISK_BUCKETS, DurationHistogram

# etcd's --quota-backend-bytes default (0 in its flags means this)
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024**3



def go_float(bound: float) -> str:
    """A bucket bound as Go's Prometheus client prints it ("1", not "1.0"),
    so a bucket's le label is the same string on brain and on etcd."""
    text = repr(bound)
    return text[:-2] if text.endswith(".0") else text


def quota_backend_bytes(config: object) -> int:
    """The backend quota the server enforces: etcd's default when unset."""
    return getattr(config, "quota_backend_bytes", 0) or DEFAULT_QUOTA_BACKEND_BYTES


def _histogram(name: str, help_: str, h: DurationHistogram | None, bounds: tuple[float, ...] = DISK_BUCKETS) -> HistogramMetricFamily:
    """A family from plain counts; all zeros for an engine that does not
    measure (the memory engine never syncs)."""
    counts = h.counts if h is not None else [0] * (len(bounds) + 1)
    names = [go_float(b) for b in (h.bounds if h is not None else bounds)] + ["+Inf"]
    cumulative, buckets = 0, []
    for le, n in zip(names, counts):
        cumulative += n
        buckets.append((le, cumulative))
    fam = HistogramMetricFamily(name, help_, labels=[])
    fam.add_metric([], buckets, h.total_seconds if h is not None else 0.0)
    return fam


class EtcdCollector:
    """etcd's server, disk and peer families, read from the server's parts."""

    def __init__(self, server) -> None:
        self.server = server

    def collect(self) -> Iterable:
        srv = self.server
        config = srv.config
        version = config.version
        yield _labelled_one("etcd_server_version", "1, labelled with the etcd version this server reports.",
                            "server_version", version)
        yield _labelled_one("etcd_cluster_version", "1, labelled with the cluster's etcd version (major.minor).",
                            "cluster_version", ".".join(version.split(".")[:2]))
        yield GaugeMetricFamily("etcd_server_is_learner", "1 if this member is a learner; a brain server never is.", value=0)
        cluster = getattr(srv, "cluster", None)
        yield CounterMetricFamily("etcd_server_leader_changes_seen", "Leaders this member has seen since its start.",
                                  value=cluster.election.leader_changes if cluster is not None else 1)
        yield GaugeMetricFamily("etcd_server_quota_backend_bytes", "The backend quota in bytes.", value=quota_backend_bytes(config))
        store = srv.store
        if store is not None:
            committed = store.proposals_committed
            failed = store.proposals_failed
            pending = max(0, store.proposals_submitted - committed - failed)
            # etcd exports committed and applied as gauges (raft's indexes):
            # the same type here, so recording rules over both servers agree.
            # A batch is applied as it commits, so the two are equal.
            yield GaugeMetricFamily("etcd_server_proposals_committed_total", "Write requests committed.", value=committed)
            yield GaugeMetricFamily("etcd_server_proposals_applied_total", "Write requests applied.", value=committed)
            yield GaugeMetricFamily("etcd_server_proposals_pending", "Write requests queued or being committed.", value=pending)
            yield CounterMetricFamily("etcd_server_proposals_failed", "Write requests failed because their batch did not commit.",
                                      value=failed)
        engine = timed(srv.engine)
        yield _histogram("etcd_disk_wal_fsync_duration_seconds", "Durations of the syncs that make a commit durable.",
                         engine.fsync_durations if engine is not None else None)
        yield _histogram("etcd_disk_backend_commit_duration_seconds", "Durations of the engine's commits.",
                         engine.commit_durations if engine is not None else None)
        # one member, no peers: declared with no samples (a one-member etcd
        # prints none of these; either way a query finds no series)
        for name, help_, label in (
            ("etcd_network_peer_sent_bytes", "Bytes sent to peers.", "To"),
            ("etcd_network_peer_received_bytes", "Bytes received from peers.", "From"),
            ("etcd_network_peer_sent_failures", "Failed sends to peers.", "To"),
            ("etcd_network_peer_received_failures", "Failed receives from peers.", "From"),
        ):
            yield CounterMetricFamily(name, help_, labels=[label])
        yield HistogramMetricFamily("etcd_network_peer_round_trip_time_seconds", "Round trip times to peers.", labels=["To"])


def _labelled_one(name: str, help_: str, label: str, value: str) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, help_, labels=[label])
    fam.add_metric([value], 1)
    return fam
