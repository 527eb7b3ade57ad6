"""A kube-apiserver's store migrated from etcd 3.5 to brain while the
apiserver runs, and a brain restored from a snapshot taken under a running
apiserver: the objects keep their resourceVersions and the apiserver and its
clients carry on."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from e2e_checks import Reflector, configmap, create_namespace, ns_path, wait_for
from kube_e2e import KubeAPIServer, env_binaries
from servers import brain_server, etcd_server
from tcp_switch import TCPSwitch

pytestmark = [pytest.mark.needs_apiserver, pytest.mark.timeout(900)]


def revision(srv) -> int:
    with srv.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True), timeout=10)
    return r.header.revision


def versions(api: KubeAPIServer, path: str) -> dict[tuple[str, str], str]:
    return {(i["metadata"].get("namespace", ""), i["metadata"]["name"]): i["metadata"]["resourceVersion"]
            for i in api.get(path)["items"]}


def fill(api: KubeAPIServer, base: str, prefix: str, n: int) -> None:
    for i in range(n):
        api.create(base, configmap(f"{prefix}-{i}", {"i": str(i)}))
    api.patch(f"{base}/{prefix}-0", {"data": {"i": "patched"}})
    api.delete(f"{base}/{prefix}-{n - 1}")


def test_migrate_under_running_apiserver(tmp_path):
    """The apiserver reaches its store through one address (TCPSwitch, as a
    load balancer or DNS name would be); the cut-over switches that address
    from etcd to brain with the apiserver running, so its watch cache and
    its clients' watches carry on."""
    tmp = str(tmp_path)
    etcd = etcd_server(tmp).start()
    switch = TCPSwitch(etcd.port)
    api = KubeAPIServer(env_binaries()[0], os.path.join(tmp, "apiserver"), f"http://127.0.0.1:{switch.port}")
    target = brain_server(tmp, "--migration-target")
    follow = None
    reflector = None
    try:
        api.start()
        target.start()
        create_namespace(api, "migrated")
        base = f"{ns_path('migrated')}/configmaps"
        fill(api, base, "before", 6)
        reflector = Reflector(api, base)
        follow = subprocess.Popen([sys.executable, "-m", "brain", "migrate", "--from", etcd.endpoint, "--to", target.endpoint],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: revision(target) >= revision(etcd) - 5, 120, "the migration to follow etcd")
        # written to etcd while the migration is held: brain lags etcd at the
        # cut-over, which must catch up first
        follow.send_signal(signal.SIGSTOP)
        fill(api, base, "during", 4)
        rv_before = api.get(base)["metadata"]["resourceVersion"]
        namespaces = {i["metadata"]["name"]: i["metadata"]["uid"] for i in api.get("/api/v1/namespaces")["items"]}
        configmaps = versions(api, "/api/v1/configmaps")
        wait_for(lambda: "during-2" in reflector.names(), 30, "the reflector to see the writes on etcd")

        # the cut-over: the apiserver's writes stop reaching etcd, the migration
        # catches up with etcd and makes brain writable, the address moves to brain
        t_switch = time.monotonic()
        switch.pause()
        time.sleep(1)
        assert revision(target) < revision(etcd)
        follow.send_signal(signal.SIGCONT)
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=120)
        assert follow.returncode == 0, err[-2000:]
        assert "cut over" in out
        final = revision(etcd)
        assert revision(target) == final
        switch.switch(target.port)
        etcd.stop()  # from here on, only brain can answer
        api.wait_ready(120)
        wait_for(lambda: api.status_of("GET", f"{base}/before-1") == 200 and api.etcd_health()[0] == 200, 120,
                 "the apiserver to use brain")
        took = time.monotonic() - t_switch

        # the same objects at the same resourceVersions
        assert {i["metadata"]["name"]: i["metadata"]["uid"] for i in api.get("/api/v1/namespaces")["items"]} == namespaces
        assert versions(api, "/api/v1/configmaps") == configmaps
        # a watch from the resourceVersion taken before the switch, and new writes
        watch = api.watch(base, rv_before, timeoutSeconds="60")
        try:
            created = api.create(base, configmap("after", {"i": "new"}))
            assert int(created["metadata"]["resourceVersion"]) > final
            ev = watch.next()
            assert ev is not None and ev["type"] == "ADDED", ev
            assert ev["object"]["metadata"]["name"] == "after"
        finally:
            watch.close()
        api.patch(f"{base}/after", {"data": {"i": "patched"}})
        api.delete(f"{base}/during-0")
        with target.channel() as ch:
            got = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/registry/configmaps/migrated/after"))
        assert got.kvs and b"patched" in got.kvs[0].value
        # the client's list+watch carried on without a relist
        wait_for(lambda: "after" in reflector.names() and "during-0" not in reflector.names(), 60,
                 "the reflector to see the writes on brain")
        assert reflector.relists == 0 and reflector.errors == []
        assert reflector.names() == {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in api.get(base)["items"]}
        print(f"switched from etcd to brain at revision {final}: apiserver serving from brain {took:.1f} s after the "
              f"switch began; reflector rewatches {reflector.rewatches}, relists {reflector.relists}")
    finally:
        if reflector is not None:
            reflector.stop()
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.wait()
        api.stop()
        switch.close()
        target.stop()
        etcd.stop()


def test_migrate_with_apiserver_restart(tmp_path):
    """The cut-over of the runbook's plain form: stop the apiserver, let the
    migration catch up and cut over, start an apiserver on brain. A
    restarted apiserver starts its watch cache afresh (a client's watch from
    before gets 410, on etcd as well), so configmaps are served here without
    the cache (--watch-cache-sizes=configmaps#0): their watches go to brain
    itself, which holds etcd's revisions, and a watch from a resourceVersion
    of the etcd days replays what happened since."""
    tmp = str(tmp_path)
    binary = env_binaries()[0]
    etcd = etcd_server(tmp).start()
    api = KubeAPIServer(binary, os.path.join(tmp, "apiserver"), etcd.url)
    target = brain_server(tmp, "--migration-target")
    follow = None
    api2 = None
    try:
        api.start()
        target.start()
        create_namespace(api, "moved")
        base = f"{ns_path('moved')}/configmaps"
        fill(api, base, "before", 5)
        rv_old = api.get(base)["metadata"]["resourceVersion"]
        follow = subprocess.Popen([sys.executable, "-m", "brain", "migrate", "--from", etcd.endpoint, "--to", target.endpoint],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: revision(target) >= revision(etcd) - 5, 120, "the migration to follow etcd")
        fill(api, base, "during", 3)
        configmaps = versions(api, "/api/v1/configmaps")
        api.stop()
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=120)
        assert follow.returncode == 0 and "cut over" in out, err[-2000:]
        final = revision(etcd)
        etcd.stop()
        api2 = KubeAPIServer(binary, os.path.join(tmp, "apiserver2"), target.url, port=api.port,
                             extra=["--watch-cache-sizes=configmaps#0"]).start()
        assert versions(api2, "/api/v1/configmaps") == configmaps
        watch = api2.watch(base, rv_old, timeoutSeconds="60")
        try:
            api2.create(base, configmap("after", {"i": "new"}))
            seen = []
            while "after" not in seen:
                ev = watch.next()
                assert ev is not None and ev["type"] != "ERROR", ev
                seen.append(ev["object"]["metadata"]["name"])
                assert int(ev["object"]["metadata"]["resourceVersion"]) > int(rv_old)
        finally:
            watch.close()
        # what happened on etcd after rv_old, then the write on brain
        assert seen == ["during-0", "during-1", "during-2", "during-0", "during-2", "after"]
        assert int(api2.get(f"{base}/after")["metadata"]["resourceVersion"]) > final
    finally:
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.wait()
        if api2 is not None:
            api2.stop()
        api.stop()
        target.stop()
        etcd.stop()


def test_restore_under_apiserver(tmp_path):
    """A snapshot of brain taken under a running apiserver, restored into a
    new directory, serves a new apiserver: the objects at their
    resourceVersions, and writes and watches carry on."""
    tmp = str(tmp_path)
    brain = brain_server(tmp).start()
    api = KubeAPIServer(env_binaries()[0], os.path.join(tmp, "apiserver"), brain.url)
    restored = None
    api2 = None
    try:
        api.start()
        create_namespace(api, "restored")
        base = f"{ns_path('restored')}/configmaps"
        fill(api, base, "cm", 8)
        snap = os.path.join(tmp, "brain.snapshot")
        save = subprocess.run([sys.executable, "-m", "brain", "snapshot", "save", snap, "--endpoints", brain.endpoint],
                              capture_output=True, text=True, timeout=120)
        assert save.returncode == 0, save.stderr
        namespaces = {i["metadata"]["name"]: i["metadata"]["uid"] for i in api.get("/api/v1/namespaces")["items"]}
        configmaps = versions(api, "/api/v1/configmaps")
        rv = api.get(base)["metadata"]["resourceVersion"]
        api.stop()
        brain.stop()
        data = os.path.join(tmp, "restored-data")
        r = subprocess.run([sys.executable, "-m", "brain", "snapshot", "restore", snap, "--data-dir", data],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        restored = brain_server(tmp, data_dir=data).start()
        api2 = KubeAPIServer(env_binaries()[0], os.path.join(tmp, "apiserver2"), restored.url).start()
        assert {i["metadata"]["name"]: i["metadata"]["uid"] for i in api2.get("/api/v1/namespaces")["items"]} == namespaces
        # the test's objects, unchanged since the snapshot: the same versions
        assert {k: v for k, v in versions(api2, "/api/v1/configmaps").items() if k[0] == "restored"} == \
            {k: v for k, v in configmaps.items() if k[0] == "restored"}
        reflector = Reflector(api2, base)
        try:
            created = api2.create(base, configmap("after", {"i": "new"}))
            assert int(created["metadata"]["resourceVersion"]) > int(rv)
            api2.patch(f"{base}/cm-1", {"data": {"i": "changed"}})
            wait_for(lambda: "after" in reflector.names(), 60, "the watch to see a write on the restored store")
            wait_for(lambda: reflector.objects.get("cm-1", {}).get("data") == {"i": "changed"}, 60, "the patch")
            assert reflector.relists == 0 and reflector.errors == []
        finally:
            reflector.stop()
    finally:
        if api2 is not None:
            api2.stop()
        api.stop()
        if restored is not None:
            restored.stop()
        brain.stop()
