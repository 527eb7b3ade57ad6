"""brain serve started as etcd is: a kubeadm static pod's flag set, ETCD_*
variables, an etcd YAML config file, Go's flag forms; the same flags start
real etcd 3.5 too, and both serve."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from certs import make_pki
from servers import ServerProcess, etcd_tool, free_port

pytestmark = pytest.mark.timeout(180)


def kubeadm_flags(pki: dict, data: str, port: int, peer: int, metrics: int, name: str = "node-1") -> list[str]:
    """What kubeadm writes into /etc/kubernetes/manifests/etcd.yaml, on loopback."""
    return [
        f"--advertise-client-urls=https://127.0.0.1:{port}",
        f"--cert-file={pki['server']}",
        "--client-cert-auth=true",
        f"--data-dir={data}",
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
        f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
        f"--initial-cluster={name}=https://127.0.0.1:{peer}",
        f"--key-file={pki['server_key']}",
        f"--listen-client-urls=https://127.0.0.1:{port}",
        f"--listen-metrics-urls=http://127.0.0.1:{metrics}",
        f"--listen-peer-urls=https://127.0.0.1:{peer}",
        f"--name={name}",
        f"--peer-cert-file={pki['server']}",
        "--peer-client-cert-auth=true",
        f"--peer-key-file={pki['server_key']}",
        f"--peer-trusted-ca-file={pki['ca']}",
        "--snapshot-count=10000",
        f"--trusted-ca-file={pki['ca']}",
    ]


def _started(kind: str, argv: list[str], port: int, data: str, tmp: str, pki: dict, env: dict | None = None) -> ServerProcess:
    srv = ServerProcess(kind, argv, port, data, os.path.join(tmp, f"{kind}-{port}.log"), env=env or {},
                        tls=(pki["ca"], pki["client"], pki["client_key"]))
    return srv.start()


def _ctl(srv: ServerProcess, pki: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([etcd_tool("etcdctl"), f"--endpoints=https://127.0.0.1:{srv.port}", "--cacert", pki["ca"],
                           "--cert", pki["client"], "--key", pki["client_key"], *args],
                          capture_output=True, text=True, timeout=30)


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _warnings(log_path: str) -> list[str]:
    out = []
    with open(log_path) as f:
        for line in f:
            if line.startswith("{"):
                rec = json.loads(line)
                if rec["level"] == "warn":
                    out.append(rec["msg"])
    return out


def test_kubeadm_flag_set_starts_etcd_and_brain(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    servers = []
    try:
        for kind in ("etcd", "brain"):
            port, peer, metrics = free_port(), free_port(), free_port()
            data = tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp_path)
            cmd = [etcd_tool("etcd")] if kind == "etcd" else [sys.executable, "-m", "brain", "serve"]
            srv = _started(kind, cmd + kubeadm_flags(pki, data, port, peer, metrics), port, data, str(tmp_path), pki)
            servers.append(srv)
            put = _ctl(srv, pki, "put", "/registry/x", "1")
            assert put.returncode == 0 and put.stdout.strip() == "OK", put.stderr
            assert "etcd_server_has_leader 1" in _metrics(metrics)
        brain = servers[1]
        (warning,) = [w for w in _warnings(brain.log_path) if "ignored" in w]
        for flag in ("--initial-cluster", "--listen-peer-urls", "--peer-client-cert-auth", "--snapshot-count",
                     "--experimental-initial-corrupt-check"):
            assert flag in warning
        # the member list says what etcd's says about the client URL
        for srv in servers:
            members = json.loads(_ctl(srv, pki, "member", "list", "-w", "json").stdout)["members"]
            assert members[0]["clientURLs"] == [f"https://127.0.0.1:{srv.port}"]
    finally:
        for srv in servers:
            srv.stop()


def test_etcd_environment_and_go_flag_forms(tmp_path):
    port = free_port()
    data = str(tmp_path / "d")
    env = {"ETCD_DATA_DIR": data, "ETCD_LISTEN_CLIENT_URLS": f"http://127.0.0.1:{port}", "ETCD_NAME": "env-member",
           "ETCD_INITIAL_CLUSTER_STATE": "existing", "ETCD_LOG_LEVEL": "info"}
    argv = [sys.executable, "-m", "brain", "serve", "-max-txn-ops=3", "-enable-v2=false", "-heartbeat-interval", "250"]
    srv = ServerProcess("brain", argv, port, data, str(tmp_path / "b.log"), env=env).start()
    try:
        with srv.channel() as ch:
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest()).members
            assert members[0].name == "env-member"
            # -max-txn-ops=3 took effect
            ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v")) for i in range(4)]
            with pytest.raises(grpc.RpcError, match="too many operations in txn request"):
                rpc_pb2_grpc.KVStub(ch).Txn(rpc_pb2.TxnRequest(success=ops))
        assert os.path.isdir(data)
        (warning,) = [w for w in _warnings(srv.log_path) if "ignored" in w]
        assert "--heartbeat-interval" in warning and "--initial-cluster-state" in warning
        assert "--enable-v2" not in warning  # set to etcd's default: nothing to say
    finally:
        srv.stop()


def test_config_file_as_etcd_reads_it(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    port = free_port()
    data = str(tmp_path / "d")
    conf = tmp_path / "etcd.conf.yml"
    conf.write_text(f"""
name: 'from-file'
data-dir: {data}
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
listen-client-urls: https://127.0.0.1:{port}
listen-peer-urls: http://localhost:2380
max-txn-ops: 5
client-transport-security:
  cert-file: {pki['server']}
  key-file: {pki['server_key']}
  client-cert-auth: true
  trusted-ca-file: {pki['ca']}
  auto-tls: false
peer-transport-security:
  client-cert-auth: true
log-level: info
log-outputs: [stderr]
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
experimental-watch-progress-notify-interval: 2000000000
""")
    # a flag beside --config-file is ignored, as etcd ignores it
    argv = [sys.executable, "-m", "brain", "serve", "--config-file", str(conf), "--name", "from-flag"]
    srv = _started("brain", argv, port, data, str(tmp_path), pki, env={"ETCD_MAX_TXN_OPS": "1"})
    try:
        members = json.loads(_ctl(srv, pki, "member", "list", "-w", "json").stdout)["members"]
        assert members[0]["name"] == "from-file"
        txn = _ctl(srv, pki, "put", "a", "1")
        assert txn.returncode == 0, txn.stderr
        warnings = _warnings(srv.log_path)
        assert any("--config-file" in w and "--name" in w and "--max-txn-ops" in w for w in warnings)
        # the progress-notify interval from the file (2 s, in nanoseconds) took effect
        assert _progress_notifications(srv, pki, 5.0) >= 1
    finally:
        srv.stop()


def _progress_notifications(srv: ServerProcess, pki: dict, seconds: float) -> int:
    creds = grpc.ssl_channel_credentials(*(open(p, "rb").read() for p in (pki["ca"], pki["client_key"], pki["client"])))
    seen = 0
    with grpc.secure_channel(f"127.0.0.1:{srv.port}", creds) as ch:
        req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w", progress_notify=True))
        stop = threading.Event()

        def requests():
            yield req
            stop.wait(seconds + 5)

        call = rpc_pb2_grpc.WatchStub(ch).Watch(requests())
        deadline = time.monotonic() + seconds
        threading.Timer(seconds, call.cancel).start()
        try:
            for resp in call:
                if not resp.created and not resp.events:
                    seen += 1
                if time.monotonic() > deadline:
                    break
        except grpc.RpcError:
            pass
        stop.set()
    return seen


@pytest.mark.parametrize("flags,message", [
    (["--max-request-bytes=-5"], "--max-request-bytes"),
    (["--client-cert-auth=maybe"], "invalid boolean value"),
    (["--listen-metrics-urls=https://127.0.0.1:1"], "https:// metrics URLs need --cert-file and --key-file"),
    (["--cipher-suites=TLS_NOT_A_SUITE"], "unexpected TLS cipher suite"),
    (["--grpc-keepalive-min-time=5"], "missing unit"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_values_refused_at_start(tmp_path, flags, message):
    r = subprocess.run([sys.executable, "-m", "brain", "serve", "--data-dir", str(tmp_path / "d"), *flags],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    (line,) = r.stderr.splitlines()
    rec = json.loads(line)
    assert rec["level"] == "fatal" and message in rec["msg"]
    assert not (tmp_path / "d").exists()


def test_version():
    for args in (["--version"], ["serve", "--version"]):
        r = subprocess.run([sys.executable, "-m", "brain", *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith("brain Version: ") and "etcd API Version: 3.5" in r.stdout


def test_deploy_static_pod_command_starts(tmp_path):
    """deploy/brain-static-pod.yaml's command, with kubeadm's paths mapped to
    test certificates and its ports to free ones: it serves, and the probes'
    paths answer on the metrics port."""
    import urllib.request

    import yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "deploy", "brain-static-pod.yaml")) as f:
        pod = yaml.safe_load(f)
    (container,) = pod["spec"]["containers"]
    pki = make_pki(str(tmp_path / "pki"))
    port, metrics = free_port(), free_port()
    data = str(tmp_path / "data")
    mapping = {
        "/etc/kubernetes/pki/etcd/server.crt": pki["server"], "/etc/kubernetes/pki/etcd/server.key": pki["server_key"],
        "/etc/kubernetes/pki/etcd/ca.crt": pki["ca"], "/var/lib/brain": data, "$(NODE_NAME)": "node-1",
        "$(POD_IP)": "127.0.0.1", ":2379": f":{port}", ":2381": f":{metrics}",
    }
    args = []
    for arg in container["command"][2:]:
        for a, b in mapping.items():
            arg = arg.replace(a, b)
        args.append(arg)
    args = list(dict.fromkeys(args))  # 127.0.0.1 twice in the listen URLs after the mapping
    args = [a.replace(f"https://127.0.0.1:{port},https://127.0.0.1:{port}", f"https://127.0.0.1:{port}") for a in args]
    srv = _started("brain", [sys.executable, "-m", "brain", "serve", *args], port, data, str(tmp_path), pki)
    try:
        assert _ctl(srv, pki, "put", "a", "1").returncode == 0
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            path = container[probe]["httpGet"]["path"]
            assert container[probe]["httpGet"]["port"] == 2381
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}{path}", timeout=10) as r:
                assert r.status == 200 and json.loads(r.read())["health"] == "true"
    finally:
        srv.stop()


def test_progress_notify_interval_on_both_servers(tmp_path):
    """--experimental-watch-progress-notify-interval=1s: a watch that asked
    for progress notifications gets them from etcd and from brain alike
    (kube-apiserver's TestProgressNotify needs this flag)."""
    from servers import brain_server, etcd_server

    counts = {}
    for kind, start in (("etcd", etcd_server), ("brain", brain_server)):
        srv = start(str(tmp_path), "--experimental-watch-progress-notify-interval=1s").start()
        try:
            counts[kind] = _plain_progress_notifications(srv, 4.5)
        finally:
            srv.stop()
    assert counts["etcd"] >= 2 and counts["brain"] >= 2, counts


def _plain_progress_notifications(srv: ServerProcess, seconds: float) -> int:
    seen = 0
    with srv.channel() as ch:
        req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w", progress_notify=True))
        stop = threading.Event()

        def requests():
            yield req
            stop.wait(seconds + 5)

        call = rpc_pb2_grpc.WatchStub(ch).Watch(requests())
        timer = threading.Timer(seconds, call.cancel)
        timer.start()
        try:
            for resp in call:
                if not resp.created and not resp.events and not resp.canceled:
                    seen += 1
        except grpc.RpcError:
            pass
        finally:
            timer.cancel()
            stop.set()
    return seen
