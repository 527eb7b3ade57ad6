"""kube-apiserver on three brains over one fake TiKV (tests/tikv_fake), its
--etcd-servers listing all three: it keeps serving through a SIGKILL of the
brain leader. Objects written before the kill are there after it, a write
after it is acknowledged within WRITE_BOUND seconds, and a watch started
before it delivers every object written after it, once, on the same stream
or, if the apiserver ends the stream, on a new one from the last
resourceVersion seen (as clients do) without a 410 Gone. Skipped without
$KUBE_APISERVER_BIN, or where tikv-client has no wheel."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from e2e_checks import configmap, create_namespace, ns_path
from ha_cluster import by_id, member, wait_leader
from kube_e2e import APIError, KubeAPIServer, env_binaries
from tikv_fake.process import start_fake, tikv_client_missing

pytestmark = [pytest.mark.needs_apiserver, pytest.mark.timeout(600)]

# A write through the apiserver after the leader's SIGKILL succeeds within
# this many seconds: brain's takeover (lease 5 s + a renewal interval), the
# apiserver's etcd client moving to another endpoint, and slack for a
# machine shared with other work.
WRITE_BOUND = 30.0


def test_apiserver_keeps_serving_through_a_leader_kill(tmp_path: Path):
    apiserver, _ = env_binaries()
    assert apiserver
    if (why := tikv_client_missing()) is not None:
        pytest.skip(why)
    fake = start_fake(tmp_path / "fake-tikv")
    members = [member(tmp_path, fake, f"m{i}", "h2") for i in range(3)]
    api: KubeAPIServer | None = None
    try:
        for m in members:
            m.start()
        leader_id, _ = wait_leader(members)
        api = KubeAPIServer(apiserver, os.path.join(tmp_path, "apiserver"), ",".join(m.url for m in members)).start()
        ns = "ha"
        create_namespace(api, ns)
        base = f"{ns_path(ns)}/configmaps"
        before = [f"before-{i}" for i in range(10)]
        for name in before:
            api.create(base, configmap(name, {"v": name}))
        rv = api.get(base)["metadata"]["resourceVersion"]
        watch = api.watch(base, rv, timeout=120, timeoutSeconds="300")

        by_id(members, leader_id).kill()
        killed_at = time.monotonic()
        took = None
        while took is None:
            try:
                api.request("POST", base, configmap("after-0", {"v": "after"}), timeout=10)
                took = time.monotonic() - killed_at
            except (APIError, OSError) as e:
                assert time.monotonic() - killed_at < WRITE_BOUND, f"no write acknowledged {WRITE_BOUND}s after the kill: {e}"
                if isinstance(e, APIError) and e.status == 409:  # the first try did land
                    took = time.monotonic() - killed_at
                time.sleep(0.2)
        print(f"kube-apiserver: the first write acknowledged {took:.2f}s after the brain leader's SIGKILL")
        after = ["after-0"] + [f"after-{i}" for i in range(1, 10)]
        for name in after[1:]:
            api.create(base, configmap(name, {"v": "after"}))
        # what was written before the kill is there
        names = {item["metadata"]["name"] for item in api.get(base)["items"]}
        assert set(before) <= names and set(after) <= names, sorted(names)
        # the watch carries on: every object added after the kill, once
        added: list[str] = []
        restarts = 0
        deadline = time.monotonic() + 60
        while not set(after) <= set(added):
            assert time.monotonic() < deadline, f"the watch saw {added}"
            ev = watch.next()
            if ev is None:  # the apiserver ended the stream: resume from the last one seen
                watch.close()
                restarts += 1
                watch = api.watch(base, rv, timeout=120, timeoutSeconds="300")
                continue
            assert ev["type"] != "ERROR", ev
            rv = ev["object"]["metadata"]["resourceVersion"]
            if ev["type"] == "ADDED":
                added.append(ev["object"]["metadata"]["name"])
        watch.close()
        assert sorted(added) == sorted(after), f"each object added once: {added}"
        print(f"the watch delivered the {len(after)} objects added after the kill ({restarts} resumptions)")
    finally:
        if api is not None:
            api.stop()
        for m in members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
            m.stop()
        fake.stop()
