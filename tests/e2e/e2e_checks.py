"""Checks the end-to-end tests share: object round trips through a real
kube-apiserver, with the store's own view of the keys it wrote."""
from __future__ import annotations

import base64
import json
import subprocess
import threading
import time

from kube_e2e import APIError, KubeAPIServer


def wait_for(pred, timeout: float, what: str, period: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ns_path(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}"


def create_namespace(api: KubeAPIServer, name: str, labels: dict | None = None) -> dict:
    return api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": name, "labels": labels or {}}})


def delete_namespace(api: KubeAPIServer, name: str) -> None:
    """Delete a namespace and finalize it as the namespace controller would
    (no controller manager runs here), so that it is gone."""
    api.delete(ns_path(name))
    ns = api.get(ns_path(name))
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"].get("deletionTimestamp"), ns
    ns["spec"]["finalizers"] = []
    api.request("PUT", ns_path(name) + "/finalize", ns)
    wait_for(lambda: api.status_of("GET", ns_path(name)) == 404, 30, f"namespace {name} to be gone")


def configmap(name: str, data: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}, "data": data}


def configmap_roundtrip(api: KubeAPIServer, store, ns: str, name: str) -> None:
    """create, get, list, patch, update (with a stale resourceVersion first),
    delete, each checked through the API and against the store's keys."""
    base = f"{ns_path(ns)}/configmaps"
    key = f"/registry/configmaps/{ns}/{name}"
    created = api.create(base, configmap(name, {"a": "1"}, {"e2e": "cm"}))
    rv1 = created["metadata"]["resourceVersion"]
    assert created["data"] == {"a": "1"}
    got = api.get(f"{base}/{name}")
    assert got["metadata"]["uid"] == created["metadata"]["uid"] and got["data"] == {"a": "1"}
    kvs = store.get(key).kvs
    assert len(kvs) == 1 and kvs[0].mod_revision == int(rv1), (key, kvs)
    listed = api.get(base, labelSelector="e2e=cm")
    assert [i["metadata"]["name"] for i in listed["items"]] == [name]
    assert int(listed["metadata"]["resourceVersion"]) >= int(rv1)

    patched = api.patch(f"{base}/{name}", {"data": {"b": "2"}, "metadata": {"labels": {"x": "y"}}})
    assert patched["data"] == {"a": "1", "b": "2"} and patched["metadata"]["labels"]["x"] == "y"
    rv2 = patched["metadata"]["resourceVersion"]
    assert int(rv2) > int(rv1)
    assert store.get(key).kvs[0].mod_revision == int(rv2)

    stale = dict(patched, data={"c": "3"})
    stale["metadata"] = dict(patched["metadata"], resourceVersion=rv1)
    try:
        api.request("PUT", f"{base}/{name}", stale)
        raise AssertionError("an update with a stale resourceVersion succeeded")
    except APIError as e:
        assert e.status == 409, e
    updated = api.request("PUT", f"{base}/{name}", dict(patched, data={"c": "3"}))
    assert updated["data"] == {"c": "3"} and int(updated["metadata"]["resourceVersion"]) > int(rv2)

    deleted = api.delete(f"{base}/{name}")
    assert deleted.get("kind") in ("Status", "ConfigMap"), deleted
    assert api.status_of("GET", f"{base}/{name}") == 404
    assert store.get(key).kvs == []


def watch_sequence(api: KubeAPIServer, ns: str, name: str) -> list[tuple[str, str, int]]:
    """ADDED, MODIFIED, DELETED of one configmap, through the watch API from
    the resourceVersion of a list; returns (type, name, resourceVersion)."""
    base = f"{ns_path(ns)}/configmaps"
    rv = api.get(base)["metadata"]["resourceVersion"]
    w = api.watch(base, rv, timeoutSeconds="60")
    try:
        out: list[dict] = []
        reader = threading.Thread(target=lambda: out.extend(w.events(3)), daemon=True)
        reader.start()
        api.create(base, configmap(name, {"v": "1"}))
        api.patch(f"{base}/{name}", {"data": {"v": "2"}})
        api.delete(f"{base}/{name}")
        reader.join(30)
    finally:
        w.close()
    seq = [(e["type"], e["object"]["metadata"]["name"], int(e["object"]["metadata"]["resourceVersion"])) for e in out]
    assert [s[0] for s in seq] == ["ADDED", "MODIFIED", "DELETED"], out
    assert all(s[1] == name for s in seq), seq
    assert seq[0][2] < seq[1][2] < seq[2][2], seq
    assert out[1]["object"]["data"] == {"v": "2"}
    return seq


def kubectl_watch_sequence(api: KubeAPIServer, kubectl: str, ns: str, name: str) -> list[str]:
    """`kubectl get --watch` on one configmap while it is created (seen from the
    initial list), modified and deleted; returns the event types it printed."""
    base = f"{ns_path(ns)}/configmaps"
    api.create(base, configmap(name, {"v": "1"}))
    proc = subprocess.Popen(
        [kubectl, f"--kubeconfig={api.kubeconfig}", "get", "configmaps", "-n", ns, "--watch", "--output-watch-events",
         "-o", "json", f"--field-selector=metadata.name={name}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict] = []
    buf = ""
    decoder = json.JSONDecoder()

    def pump():
        nonlocal buf
        for chunk in iter(lambda: proc.stdout.readline(), ""):
            buf += chunk
            while True:
                s = buf.lstrip()
                if not s:
                    break
                try:
                    obj, end = decoder.raw_decode(s)
                except ValueError:
                    break
                events.append(obj)
                buf = s[end:]

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(events) >= 1, 30, "kubectl's first watch event")
        api.patch(f"{base}/{name}", {"data": {"v": "2"}})
        wait_for(lambda: len(events) >= 2, 30, "kubectl's MODIFIED event")
        api.delete(f"{base}/{name}")
        wait_for(lambda: len(events) >= 3, 30, "kubectl's DELETED event")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        t.join(5)
    types = [e["type"] for e in events]
    assert types == ["ADDED", "MODIFIED", "DELETED"], (types, proc.stderr.read() if proc.stderr else "")
    assert events[1]["object"]["data"] == {"v": "2"}
    return types


class Reflector:
    """A client's list+watch of one resource (as client-go's reflector does):
    it relists on 410 and keeps the objects it has seen, so a test can compare
    its view with the server's after the store went away and came back."""

    def __init__(self, api: KubeAPIServer, path: str):
        self.api = api
        self.path = path
        self.objects: dict[str, dict] = {}
        self.relists = 0
        self.rewatches = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._watch = None
        self._lock = threading.Lock()
        self.rv = self._list()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _list(self) -> str:
        lst = self.api.get(self.path)
        with self._lock:
            self.objects = {o["metadata"]["name"]: o for o in lst["items"]}
        return lst["metadata"]["resourceVersion"]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch = self.api.watch(self.path, self.rv, timeoutSeconds="300")
                while not self._stop.is_set():
                    ev = self._watch.next()
                    if ev is None:
                        break
                    if ev["type"] == "ERROR":
                        if ev["object"].get("code") == 410:
                            self.relists += 1
                            self.rv = self._list()
                        else:
                            self.errors.append(json.dumps(ev["object"]))
                        break
                    obj = ev["object"]
                    with self._lock:
                        if ev["type"] == "DELETED":
                            self.objects.pop(obj["metadata"]["name"], None)
                        else:
                            self.objects[obj["metadata"]["name"]] = obj
                    self.rv = obj["metadata"]["resourceVersion"]
            except APIError as e:
                if e.status == 410:
                    self.relists += 1
                    try:
                        self.rv = self._list()
                    except Exception:  # noqa: BLE001 - the store may still be down
                        time.sleep(0.5)
                else:
                    time.sleep(0.5)
            except Exception:  # noqa: BLE001 - connection errors while the store is down
                time.sleep(0.5)
            finally:
                if self._watch is not None:
                    self._watch.close()
                    self._watch = None
            if not self._stop.is_set():
                self.rewatches += 1

    def names(self) -> dict[str, str]:
        with self._lock:
            return {n: o["metadata"]["resourceVersion"] for n, o in self.objects.items()}

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.close()
        self._thread.join(10)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()
