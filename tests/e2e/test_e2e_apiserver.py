"""A real kube-apiserver on brain, end to end (and on etcd 3.5, which tests the
tests). One apiserver per store serves the whole module; the tests run in
order, and the last ones read what the earlier ones left: the /readyz record
and the apiserver's log."""
from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from e2e_checks import (
    Reflector,
    b64,
    configmap,
    configmap_roundtrip,
    create_namespace,
    delete_namespace,
    kubectl_watch_sequence,
    ns_path,
    wait_for,
    watch_sequence,
)
from kube_e2e import ETCD_ERROR_PATTERNS, APIError, lines_matching, metric_sum, scan_log

pytestmark = [pytest.mark.needs_apiserver, pytest.mark.timeout(600)]


def test_ready_on_the_store(cluster):
    api, store = cluster.api, cluster.store
    status, body = api.readyz()
    assert status == 200, body
    assert "[+]storage-readiness ok" in body or "[+]poststarthook/storage-readiness ok" in body, body
    assert api.etcd_health() == (200, "ok")
    assert api.status_of("GET", "/livez") == 200
    # the apiserver's bootstrap objects are in the store under test
    assert store.get("/registry/namespaces/default").kvs, "no /registry/namespaces/default in the store"
    # the bootstrap controller creates the kubernetes service soon after
    wait_for(lambda: api.status_of("GET", "/api/v1/namespaces/default/services/kubernetes") == 200, 60,
             "the kubernetes service")
    assert store.keys("/registry/services/specs/default/") == ["/registry/services/specs/default/kubernetes"]
    assert api.ready_after is not None


def test_namespace_crud(cluster, unique):
    api, store = cluster.api, cluster.store
    name = unique("ns")
    created = create_namespace(api, name, {"e2e": "ns"})
    assert created["status"]["phase"] == "Active"
    assert api.get(ns_path(name))["metadata"]["uid"] == created["metadata"]["uid"]
    listed = api.get("/api/v1/namespaces", labelSelector="e2e=ns")
    assert name in [i["metadata"]["name"] for i in listed["items"]]
    patched = api.patch(ns_path(name), {"metadata": {"labels": {"team": "storage"}}})
    assert patched["metadata"]["labels"]["team"] == "storage"
    assert store.get(f"/registry/namespaces/{name}").kvs[0].mod_revision == int(patched["metadata"]["resourceVersion"])
    delete_namespace(api, name)
    assert store.get(f"/registry/namespaces/{name}").kvs == []


def test_configmap_crud(cluster, unique):
    ns = unique("cm")
    create_namespace(cluster.api, ns)
    configmap_roundtrip(cluster.api, cluster.store, ns, "settings")


def test_secret_crud(cluster, unique):
    api, store = cluster.api, cluster.store
    ns = unique("secret")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/secrets"
    created = api.create(base, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                                "type": "Opaque", "data": {"user": b64("admin")}, "stringData": {"pass": "s3cret"}})
    assert created["data"] == {"user": b64("admin"), "pass": b64("s3cret")}
    assert api.get(f"{base}/creds")["data"]["pass"] == b64("s3cret")
    assert [i["metadata"]["name"] for i in api.get(base)["items"]] == ["creds"]
    patched = api.patch(f"{base}/creds", [{"op": "replace", "path": "/data/pass", "value": b64("n3w")},
                                          {"op": "add", "path": "/metadata/labels", "value": {"rotated": "yes"}}],
                        kind="json")
    assert patched["data"]["pass"] == b64("n3w") and patched["metadata"]["labels"] == {"rotated": "yes"}
    assert store.get(f"/registry/secrets/{ns}/creds").kvs[0].mod_revision == int(patched["metadata"]["resourceVersion"])
    api.delete(f"{base}/creds")
    assert api.status_of("GET", f"{base}/creds") == 404
    assert store.get(f"/registry/secrets/{ns}/creds").kvs == []


def test_deployment_crud(cluster, unique):
    api, store = cluster.api, cluster.store
    ns = unique("deploy")
    create_namespace(api, ns)
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    labels = {"app": "web"}
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}},
    }
    created = api.create(base, dep)
    assert created["metadata"]["generation"] == 1
    got = api.get(f"{base}/web")
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1"
    assert [i["metadata"]["name"] for i in api.get(base)["items"]] == ["web"]
    assert "web" in [i["metadata"]["name"] for i in api.get("/apis/apps/v1/deployments")["items"]]
    patched = api.patch(f"{base}/web", {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "web", "image": "registry.example/web:2"}]}}}}, kind="strategic")
    assert patched["spec"]["replicas"] == 3 and patched["metadata"]["generation"] == 2
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:2"
    scale = api.get(f"{base}/web/scale")
    assert scale["spec"]["replicas"] == 3
    scale["spec"]["replicas"] = 5
    assert api.request("PUT", f"{base}/web/scale", scale)["spec"]["replicas"] == 5
    status = api.patch(f"{base}/web/status", {"status": {"observedGeneration": 3, "replicas": 0}})
    assert status["status"]["observedGeneration"] == 3
    key = f"/registry/deployments/{ns}/web"
    assert store.get(key).kvs[0].mod_revision == int(status["metadata"]["resourceVersion"])
    api.delete(f"{base}/web")
    wait_for(lambda: api.status_of("GET", f"{base}/web") == 404, 30, "the deployment to be gone")
    assert store.get(key).kvs == []


def test_watch_api_added_modified_deleted(cluster, unique):
    ns = unique("watch")
    create_namespace(cluster.api, ns)
    watch_sequence(cluster.api, ns, "watched")


def test_concurrent_writes_watched_in_order(cluster, unique):
    """Writes from several clients at once (the store commits them in groups):
    one watch sees every event exactly once, in resourceVersion order, and
    each object's ADDED, MODIFIED, DELETED in that order."""
    api = cluster.api
    ns = unique("busy")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/configmaps"
    n, workers = 60, 6
    rv = api.get(base)["metadata"]["resourceVersion"]
    w = api.watch(base, rv, timeout=60, timeoutSeconds="120")
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(w.events(3 * n)), daemon=True)
    reader.start()
    errors: list[str] = []

    def life(i: int) -> None:
        try:
            name = f"obj-{i}"
            api.create(base, configmap(name, {"v": "0"}))
            api.patch(f"{base}/{name}", {"data": {"v": "1"}})
            api.delete(f"{base}/{name}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{i}: {e}")

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(life, range(n)))
        reader.join(60)
    finally:
        w.close()
    assert not errors, errors[:5]
    assert len(events) == 3 * n, f"{len(events)} events for {3 * n} writes"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs), "events out of resourceVersion order"
    per: dict[str, list[str]] = {}
    for e in events:
        per.setdefault(e["object"]["metadata"]["name"], []).append(e["type"])
    assert len(per) == n and all(t == ["ADDED", "MODIFIED", "DELETED"] for t in per.values()), per
    assert api.get(base)["items"] == []


def test_large_object(cluster, unique):
    """A configmap near the 1 MiB limit goes through create, get, watch and
    delete."""
    api, store = cluster.api, cluster.store
    ns = unique("large")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/configmaps"
    blob = "x" * (1024 * 1024 - 4096)
    rv = api.get(base)["metadata"]["resourceVersion"]
    w = api.watch(base, rv, timeout=60, timeoutSeconds="60")
    try:
        api.create(base, configmap("big", {"blob": blob}))
        ev = w.next()
    finally:
        w.close()
    assert ev["type"] == "ADDED" and ev["object"]["data"]["blob"] == blob
    assert api.get(f"{base}/big")["data"]["blob"] == blob
    assert len(store.get(f"/registry/configmaps/{ns}/big").kvs[0].value) > len(blob)
    api.delete(f"{base}/big")
    assert api.status_of("GET", f"{base}/big") == 404


def test_kubectl_get_watch(cluster, kubectl, unique):
    api = cluster.api
    ns = unique("kubectl")
    out = api.kubectl(kubectl, "create", "namespace", ns)
    assert out.returncode == 0, out.stderr
    out = api.kubectl(kubectl, "-n", ns, "create", "configmap", "from-kubectl", "--from-literal=k=v")
    assert out.returncode == 0, out.stderr
    out = api.kubectl(kubectl, "-n", ns, "get", "configmap", "from-kubectl", "-o", "jsonpath={.data.k}")
    assert out.returncode == 0 and out.stdout == "v", out
    kubectl_watch_sequence(api, kubectl, ns, "kubectl-watched")


def test_paged_list(cluster, unique):
    api = cluster.api
    ns = unique("pages")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/configmaps"
    names = [f"cm-{i}" for i in range(7)]
    for n in names:
        api.create(base, configmap(n, {"n": n}))
    pages, remaining, rvs = [], [], set()
    page = api.get(base, limit="2")
    late = None
    while True:
        pages.append([i["metadata"]["name"] for i in page["items"]])
        remaining.append(page["metadata"].get("remainingItemCount"))
        rvs.add(page["metadata"]["resourceVersion"])
        token = page["metadata"].get("continue")
        if late is None:
            # a configmap created after the first page is not in this list
            late = api.create(base, configmap("cm-late", {"n": "late"}))
        if not token:
            break
        page = api.get(base, limit="2", **{"continue": token})
    seen = [n for p in pages for n in p]
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen)), pages
    assert [len(p) for p in pages] == [2, 2, 2, 1], pages
    assert remaining == [5, 3, 1, None], remaining
    assert len(rvs) == 1, f"the pages of one list came from different revisions: {rvs}"
    # a fresh paged list sees the late one
    full = api.get(base, limit="100")
    assert len(full["items"]) == 8 and "remainingItemCount" not in full["metadata"]
    # cluster-wide paging returns every configmap once as well
    everything, token = [], None
    while True:
        q = {"limit": "2"} if token is None else {"limit": "2", "continue": token}
        page = api.get("/api/v1/configmaps", **q)
        everything += [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert len(everything) == len(set(everything))
    assert {(ns, n) for n in names + ["cm-late"]} <= set(everything)


def test_watch_list_initial_events(cluster, unique):
    """A streaming list (sendInitialEvents, as client-go's reflectors use): the
    existing objects as ADDED, then the bookmark that ends the initial events,
    at a resourceVersion no older than the store's current one."""
    api = cluster.api
    ns = unique("watchlist")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/configmaps"
    for i in range(3):
        api.create(base, configmap(f"w{i}", {"i": str(i)}))
    current = int(api.get(base)["metadata"]["resourceVersion"])
    t0 = time.monotonic()
    w = api.watch(base, "", timeout=30, sendInitialEvents="true", resourceVersionMatch="NotOlderThan",
                  allowWatchBookmarks="true", timeoutSeconds="25")
    try:
        events = []
        if "streaming lists" in cluster.known_lacks():
            ev = w.next()
            assert ev and ev["type"] == "ERROR" and "RequestWatchProgress is disabled" in ev["object"]["message"], ev
            return
        while True:
            ev = w.next()
            assert ev is not None, f"the stream ended before the initial-events-end bookmark: {events}"
            events.append(ev)
            if ev["type"] == "BOOKMARK" and ev["object"]["metadata"].get("annotations", {}).get(
                    "k8s.io/initial-events-end") == "true":
                break
    finally:
        w.close()
    took = time.monotonic() - t0
    added = sorted(e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED")
    assert added == ["w0", "w1", "w2"], events
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= current
    print(f"{cluster.backend}: initial-events-end bookmark after {took:.2f} s")
    assert took < 5, f"the initial events took {took:.1f} s"


def test_consistent_reads_and_no_storage_errors(cluster):
    """The lists so far were consistent reads. Against a store with watch
    progress (brain) the watch cache serves them, after a progress request;
    etcd 3.5.1 lacks that, so there every one goes to etcd. No etcd request
    has failed."""
    m = cluster.api.metrics()
    errors = [(lbl, v) for lbl, v in m.get("etcd_request_errors_total", []) if v]
    assert not errors, f"etcd requests failed: {errors}"
    name = "apiserver_watch_cache_consistent_read_total"
    served = metric_sum(m, name, success="true", fallback="false")
    fell_back = metric_sum(m, name, fallback="true")
    failed = metric_sum(m, name, success="false")
    print(f"{cluster.backend}: consistent reads from the watch cache {served:.0f}, fell back {fell_back:.0f}, "
          f"failed {failed:.0f}")
    assert failed == 0 and fell_back == 0, m.get(name)
    if "consistent reads from the watch cache" in cluster.known_lacks():
        assert served == 0, m.get(name)
    else:
        assert served > 0, f"no consistent read came from the watch cache: {m.get(name)}"


def test_events_expire_by_lease(cluster, unique):
    api, store = cluster.api, cluster.store
    ns = unique("events")
    create_namespace(api, ns)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ev = api.create(f"{ns_path(ns)}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "short-lived"},
        "involvedObject": {"kind": "Namespace", "name": ns, "namespace": ns, "apiVersion": "v1"},
        "reason": "E2E", "message": "expires with its lease", "type": "Normal", "count": 1,
        "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "e2e"},
    })
    t0 = time.monotonic()
    key = f"/registry/events/{ns}/short-lived"
    kvs = store.get(key).kvs
    assert len(kvs) == 1 and kvs[0].lease != 0, f"the event's key has no lease: {kvs}"
    ttl = store.lease_ttl(kvs[0].lease)
    assert 0 < ttl.grantedTTL <= 10 and ttl.TTL <= ttl.grantedTTL, ttl
    assert api.get(f"{ns_path(ns)}/events/short-lived")["metadata"]["uid"] == ev["metadata"]["uid"]
    wait_for(lambda: api.status_of("GET", f"{ns_path(ns)}/events/short-lived") == 404, ttl.grantedTTL + 20,
             "the event to expire")
    assert time.monotonic() - t0 >= ttl.TTL - 1, "the event went before its lease could expire"
    assert store.get(key).kvs == []
    assert api.get(f"{ns_path(ns)}/events")["items"] == []


def test_compaction_cycle_and_410(cluster, unique):
    api, store = cluster.api, cluster.store
    ns = unique("compact")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/configmaps"
    for i in range(3):
        api.create(base, configmap(f"c{i}", {"i": str(i)}))
    first = api.get(base, limit="1")
    old_rv, token = first["metadata"]["resourceVersion"], first["metadata"]["continue"]
    assert api.get(base, resourceVersion=old_rv, resourceVersionMatch="Exact")["metadata"]["resourceVersion"] == old_rv
    api.patch(f"{base}/c0", {"data": {"i": "changed"}})
    before = store.get("compact_rev_key").kvs
    wait_for(lambda: store.compacted_past(int(old_rv)), 60, f"the apiserver to compact past {old_rv}", period=1)
    after = store.get("compact_rev_key").kvs
    assert after and (not before or after[0].version > before[0].version), (before, after)

    def gone(**q) -> int:
        return api.status_of("GET", base, **q)

    # these reads at a compacted revision make the apiserver's etcd client
    # log "required revision has been compacted" (as it should)
    log_from = api.log_size()

    # The watch cache drops its snapshots when it notices the compaction
    # (it polls every 15 s); from then on these come from the store: 410.
    wait_for(lambda: gone(resourceVersion=old_rv, resourceVersionMatch="Exact") == 410, 40,
             "an exact list at a compacted resourceVersion to return 410")
    wait_for(lambda: gone(limit="1", **{"continue": token}) == 410, 40,
             "a continue token from before compaction to return 410")
    try:
        api.get(base, resourceVersion=old_rv, resourceVersionMatch="Exact")
    except APIError as e:
        assert e.status == 410 and e.body.get("reason") == "Expired", e.body
    time.sleep(1)
    cluster.log_windows.append((log_from, api.log_size(), re.compile(r"required revision has been compacted")))
    # the current state is whole
    assert sorted(i["metadata"]["name"] for i in api.get(base)["items"]) == ["c0", "c1", "c2"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_store_restart_under_running_apiserver(cluster, unique, sig):
    api, store = cluster.api, cluster.store
    ns = unique("restart")
    create_namespace(api, ns)
    base = f"{ns_path(ns)}/configmaps"
    for i in range(5):
        api.create(base, configmap(f"before-{i}", {"i": str(i)}))
    api.patch(f"{base}/before-0", {"data": {"i": "patched"}})
    api.delete(f"{base}/before-4")
    reflector = Reflector(api, base)
    namespaces = {i["metadata"]["name"]: i["metadata"]["uid"] for i in api.get("/api/v1/namespaces")["items"]}
    cms = {(i["metadata"]["namespace"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
           for i in api.get("/api/v1/configmaps")["items"]}
    try:
        t_down, log_down = time.monotonic(), api.log_size()
        store.stop(sig)
        t_stopped = time.monotonic()
        time.sleep(3)
        store.start()
        t_started = time.monotonic()
        api.wait_ready(120)
        # ready, its own health check of the store passes, and a read that
        # goes to the store (a single object) answers
        wait_for(lambda: api.readyz()[0] == 200 and api.etcd_health()[0] == 200
                 and api.status_of("GET", f"{base}/before-1") == 200, 60, "the apiserver to recover")
        t_up = time.monotonic()
        # writes work again, and a client's watch carries on
        api.create(base, configmap("after", {"i": "new"}))
        wait_for(lambda: "after" in reflector.names(), 60, "the reflector to see the object created after the restart")
        time.sleep(2)  # let late outage messages land inside the window
        cluster.log_windows.append((log_down, api.log_size(), "outage"))
        cluster.monitor.allow(t_down, time.monotonic())
        # no object lost, none changed
        assert {i["metadata"]["name"]: i["metadata"]["uid"] for i in api.get("/api/v1/namespaces")["items"]} == namespaces
        now = {(i["metadata"]["namespace"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
               for i in api.get("/api/v1/configmaps")["items"]}
        assert now.pop((ns, "after"))
        assert now == cms
        server_view = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in api.get(base)["items"]}
        assert reflector.names() == server_view
        assert sorted(server_view) == ["after", "before-0", "before-1", "before-2", "before-3"]
        assert reflector.errors == []
        print(f"{cluster.backend} {sig.name}: stopped in {t_stopped - t_down:.1f} s, started in "
              f"{t_started - t_stopped - 3:.1f} s, apiserver recovered {t_up - t_started:.1f} s later; reflector rewatches "
              f"{reflector.rewatches}, relists {reflector.relists}")
    finally:
        reflector.stop()


def test_readyz_stayed_ready(cluster):
    mon = cluster.monitor
    assert mon.samples > 10, "the /readyz monitor took too few samples"
    unexpected = mon.unexpected()
    assert not unexpected, f"/readyz left 200 outside a store restart: {unexpected[:10]}"


def test_apiserver_log_has_no_etcd_errors(cluster):
    bad = scan_log(cluster.api.log_path, cluster.log_windows, ignore=cluster.known_lacks())
    assert not bad, "etcd errors in the kube-apiserver log:\n" + "\n".join(bad[:40])
    for name in cluster.known_lacks():
        if name not in {n for n, _, _ in ETCD_ERROR_PATTERNS}:
            continue
        # the suite knows what etcd 3.5.1 lacks, and sees the apiserver say so
        assert lines_matching(cluster.api.log_path, name), f"expected {name!r} lines against {cluster.backend}"
