"""The workload catalog: what each `brain bench` workload sends, in the shape
kube-apiserver's etcd3 storage sends it, and what its rate and latency mean."""
from __future__ import annotations

from dataclasses import dataclass

from bench.settings import Settings


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    # what one counted operation is (the rate is in these per second)
    unit: str
    # what the latency figures measure
    latency: str
    # the Go load generator's workload of the same shape, when it has one
    etcdload: str | None
    # the gRPC service beyond KV that the workload needs ("watch", "lease")
    needs: str | None


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "create", "txn create", "creates/s", "per Txn",
        # etcdload's put is a plain Put, not kube's compare-and-put Txn
        etcdload=None, needs=None,
    ),
    Workload("update", "txn update", "updates/s", "per Txn", etcdload=None, needs=None),
    Workload("get", "single-key get", "gets/s", "per Range", etcdload="range_one", needs=None),
    Workload(
        "list", "paged list", "lists/s", "per whole paged list",
        # etcdload's range_prefix reads the prefix in one unpaged Range
        etcdload=None, needs=None,
    ),
    Workload(
        "watch", "watch fan-out", "events/s", "delivery lag (put sent -> event received)",
        etcdload="watch", needs="watch",
    ),
    Workload("lease", "lease grant", "grants/s", "per LeaseGrant", etcdload=None, needs="lease"),
)

NAMES: tuple[str, ...] = tuple(w.name for w in WORKLOADS)


def by_name(name: str) -> Workload:
    for w in WORKLOADS:
        if w.name == name:
            return w
    raise KeyError(name)


def describe(name: str, settings: Settings) -> str:
    """One line on what the workload sends, with the run's numbers."""
    s = settings
    text = {
        "create": f"Txn(If MOD(key)==0 Then Put {s.value_size} B) on new keys, {s.inflight} in flight",
        "update": f"Txn(If MOD(key)==rev Then Put {s.value_size} B Else Get) on own keys, {s.inflight} in flight",
        "get": f"Range(key, limit=1) of one key, linearizable, {s.inflight} in flight",
        "list": f"paged Range of a {s.list_keys}-key prefix, limit {s.page_size}, revision pinned after page 1, "
        f"exact count checked, {s.list_inflight} lists in flight",
        "watch": f"{s.watchers} watchers on a prefix over {s.watch_streams} streams; {s.watch_puts} puts "
        f"({s.watch_put_inflight} in flight{f', {s.watch_put_rate:g}/s' if s.watch_put_rate else ''})",
        "lease": f"LeaseGrant(TTL {s.lease_ttl} s), {s.inflight} in flight",
    }
    return text[name]
