"""`brain bench` end to end, with tiny sizes: one run against a brain started
here (Python client), and one --compare run that starts its own etcd and brain."""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import ROOT, brain_server

RUN_FIELDS = ("client", "ops", "wall_s", "ops_per_s", "p50_ms", "p99_ms", "max_ms", "errors",
              "client_cpu_pct", "client_busiest_pct", "client_procs", "server_cpu_pct", "server_rss_mb", "round")
TINY = ["--duration", "0.3", "--inflight", "4", "--list-keys", "120", "--page-size", "50", "--list-inflight", "1",
        "--watchers", "6", "--watch-streams", "2", "--watch-puts", "10", "--watch-put-inflight", "2",
        "--value-size", "64", "--client-procs", "1", "--channels", "1", "--no-progress"]


def _bench(out: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "brain", "bench", "--out", out, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    paths = glob.glob(os.path.join(out, "brain-bench-*.json"))
    assert len(paths) == 1, paths
    assert f"results: {os.path.abspath(paths[0])}" in proc.stdout
    with open(paths[0]) as f:
        return json.load(f)


@pytest.mark.timeout(60)
def test_bench_against_endpoint(brain, tmp_path):
    out = str(tmp_path / "out")
    doc = _bench(out, "--endpoint", brain.endpoint, "--server-pid", str(brain.proc.pid), "--client", "python", *TINY)
    assert doc["mode"] == "single" and doc["order"] == ["endpoint"] and doc["rounds"] == 1
    names = [w["name"] for w in doc["workloads"]]
    assert names == ["create", "update", "get", "list", "watch", "lease"]
    for w in doc["workloads"]:
        if w.get("skipped"):  # only the services brain may not serve yet
            assert w["name"] in ("watch", "lease") and "no " + w["name"] in w["skipped"]
            continue
        (run,) = w["runs"]["endpoint"]
        assert "failed" not in run, run
        missing = [f for f in RUN_FIELDS if f not in run]
        assert not missing, (w["name"], missing)
        assert run["client"] == "python" and run["ops"] > 0 and run["errors"] == 0, (w["name"], run)
        # the pid was given: the server's CPU and memory are known
        assert run["server_cpu_pct"] is not None and run["server_rss_mb"] > 0
        assert w["median"]["endpoint"]["ops_per_s"] > 0
    # a running endpoint gets its keyspace back
    with brain.channel() as ch:
        left = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/registry/brain-bench/", range_end=b"/registry/brain-bench0", count_only=True))
    assert left.count == 0


@pytest.mark.timeout(60)
def test_bench_compare(tmp_path):
    out = str(tmp_path / "out")
    doc = _bench(out, "--compare", "--rounds", "1", "--workloads", "get", "--client", "python", "--work-dir", str(tmp_path / "work"), *TINY)
    assert doc["mode"] == "compare" and doc["order"] == ["etcd", "brain"]
    (w,) = doc["workloads"]
    assert w["name"] == "get" and w["client"] == "python"
    for name in ("etcd", "brain"):
        (run,) = w["runs"][name]
        assert "failed" not in run and run["ops"] > 0 and run["server_cpu_pct"] is not None, run
    assert w["ratio"]["ops_per_s"] > 0 and w["ratio"]["p99_ms"] > 0
    assert w["latency_metric"] == "p99_ms"
    # started servers are stopped and their scratch directories removed
    assert os.listdir(tmp_path / "work") == []
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: no chart to check")
    png = doc["chart"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
def test_watch_puts_can_be_paced(brain, tmp_path):
    """--watch-put-rate spaces the puts (the Python client then watches): at
    20 puts/s, put i goes at i/20 s, so a 0.3 s run sends 6 or 7 of its 10
    puts (the 7th when it starts right at the end; fewer only if a put is
    slow), and the 6 watchers receive 36 or 42 events, where an unpaced run
    delivers all 60."""
    out = str(tmp_path / "out")
    doc = _bench(out, "--endpoint", brain.endpoint, "--workloads", "watch", "--watch-put-rate", "20", *TINY)
    (w,) = doc["workloads"]
    (run,) = w["runs"]["endpoint"]
    assert run["client"] == "python" and "cannot pace" in run["client_choice"], run
    assert run["errors"] == 0 and run["ops"] % 6 == 0 and 4 * 6 <= run["ops"] <= 7 * 6, run
    assert doc["settings"]["watch_put_rate"] == 20


@pytest.mark.timeout(240)
def test_bench_scale_compare(tmp_path):
    """--scale with --compare: both servers loaded with the same keys, every
    figure present for each, brain's list also paced at etcd's page rate, the
    migration from the loaded etcd, and last a DeleteRange of every key."""
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "brain", "bench", "--out", out, "--scale", "3000", "--compare",
                           "--page-size", "100", "--work-dir", str(tmp_path / "work"), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (path,) = glob.glob(os.path.join(out, "brain-bench-scale-3000-*.json"))
    with open(path) as f:
        doc = json.load(f)
    assert doc["order"] == ["etcd", "brain"]
    for name in ("etcd", "brain"):
        r = doc["results"][name]
        assert r["load_keys_per_s"] > 0 and 3 <= r["quiet_after_load_s"] < 300
        assert r["paged_list"]["keys"] == 3000 and r["paged_list"]["pages"] == 30 and r["paged_list"]["first_count"] == 3000
        assert r["count"]["count"] == 3000 and r["unpaged"]["keys"] == 3000
        assert r["probe"]["idle"]["probes"] > 0 and r["probe"]["idle"]["timeouts"] == 0
        assert r["steady_puts"]["puts"] > 100 and 0 < r["steady_puts"]["p50_ms"] <= r["steady_puts"]["p99_ms"]
        assert r["rss_after_load"] > 0 and r["disk_bytes"] > 0
        assert 0 < r["anon_after_load"] <= r["rss_after_load"] and r["anon_settled_after_unpaged"] > 0
        assert r["restart_clean_s"] > 0 and r["restart_kill_s"] > 0
        assert r["snapshot_save"]["bytes"] > 3000 * 1024 and r["snapshot_restore"]["seconds"] > 0
        assert "snapshot" in r["probe"]
        assert r["delete_everything"]["deleted"] == 3000 and r["delete_everything"]["seconds"] > 0
    assert doc["migrate"]["keys_per_s"] > 0 and "brain migrate --once" in proc.stdout
    assert "paged_list_paced" in doc["results"]["brain"]["probe"]
    assert "brain/etcd" in proc.stdout and "count-only range" in proc.stdout and "put p99, one client" in proc.stdout
    assert "one DeleteRange of every key" in proc.stdout
    assert os.listdir(tmp_path / "work") == []


def _started_modules(log: str) -> set[str]:
    """The modules `python -X importtime` reports loading."""
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:") and "|" in line}


@pytest.mark.timeout(60)
def test_serve_does_not_import_bench(tmp_path):
    """The bench is a client tool apart from the server: a started `brain
    serve` has loaded the server's modules and none of the bench's."""
    server = brain_server(str(tmp_path))
    server.argv[1:1] = ["-X", "importtime"]
    server.start()
    try:
        with server.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
    finally:
        server.stop()
    loaded = _started_modules(server.log_tail(10_000_000))
    assert {"brain.serve_command", "brain.server.kv", "brain.watch.hub"} <= loaded
    assert not {m for m in loaded if m == "bench" or m.startswith("bench.")}


def test_chart_shows_a_ratio_of_zero(tmp_path):
    """brain drained its watch events at once (0 ms against etcd's 238 ms):
    the ratio row, on a log axis, still draws."""
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: no chart to check")
    from bench.chart import write_png

    watch = {
        "name": "watch", "title": "watch fan-out", "unit": "events/s", "client": "etcdload",
        "latency_metric": "drain_ms", "ratio": {"ops_per_s": 1.17, "drain_ms": 0.0},
        "median": {"etcd": {"ops_per_s": 344361.8, "drain_ms": 238.1}, "brain": {"ops_per_s": 403442.0, "drain_ms": 0.0}},
    }
    doc = {"workloads": [watch], "order": ["etcd", "brain"], "mode": "compare", "rounds": 1,
           "settings": {"duration": 5.0}, "host": {"cpus": 2}}
    path = str(tmp_path / "chart.png")
    write_png(doc, path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_delete_answered_with_an_error_is_timed_until_its_keys_are_gone(brain):
    """etcd may answer a huge DeleteRange "request timed out" and apply it
    all the same: the scale run then times it until a count of the loaded
    keys is 0, and says what is left if that never comes."""
    import threading
    import time

    import grpc

    from bench.scale import PREFIX, PREFIX_END, _wait_until_gone, pod_key

    with grpc.insecure_channel(brain.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(20):
            kv.Put(rpc_pb2.PutRequest(key=pod_key(i), value=b"v"))
        assert _wait_until_gone(kv, max_s=0) == 20
        later = threading.Timer(0.5, lambda: kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=PREFIX, range_end=PREFIX_END)))
        t0 = time.monotonic()
        later.start()
        assert _wait_until_gone(kv, poll_s=0.05, max_s=30) == 0
        assert time.monotonic() - t0 >= 0.5
        later.join()
