"""A real kube-apiserver for the end-to-end suite: its process, a small REST
client, a /readyz monitor, and the scan of its log for etcd errors.

The binary comes from $KUBE_APISERVER_BIN (kubectl from $KUBECTL_BIN); nothing
here builds or downloads one."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from servers import free_port

TOKEN = "e2e-admin-token"

# Lines the apiserver must not log against a correct etcd v3 server:
# (name, pattern, whether a store outage explains it).
ETCD_ERROR_PATTERNS = [
    ("watch progress unsupported", re.compile(r"RequestWatchProgress feature is not supported"), False),
    ("failed to check RequestWatchProgress", re.compile(r"Failed to check if RequestWatchProgress"), False),
    ("too large resource version", re.compile(r"Too large resource version"), False),
    ("event without PrevKv", re.compile(r"PrevKv=nil"), False),
    ("unimplemented RPC", re.compile(r"code = Unimplemented"), False),
    ("compaction failed", re.compile(r"compact failed"), True),
    ("etcd server error", re.compile(r"etcdserver: "), True),
    ("required revision compacted", re.compile(r"required revision has been compacted"), True),
    ("store unreachable", re.compile(r"connect: connection refused"), True),
    ("etcd client warning", re.compile(r'"level":"(warn|error|dpanic|panic|fatal)".*"logger":"etcd-client"'), True),
]

# klog error lines about the storage layer (E1122 12:00:00.000000 ...).
_KLOG_ERROR = re.compile(r"^E\d{4} ")
_STORAGE_WORDS = re.compile(r"etcd|grpc|storage|cacher|watch|compact|reflector", re.I)

# What an outage of the store (a restart under a running apiserver) makes the
# apiserver log; these are expected only inside the outage window.
OUTAGE_PATTERNS = re.compile(
    r"connection refused|Error while dialing|transport is closing|context deadline exceeded|"
    r"Unavailable|connection reset|EOF|etcd.*failed|unhealthy|not ready|"
    r"error reading from server|Canceled|i/o timeout|TLS handshake|"
    r"\[-\]etcd|readyz check failed|timeout|watch chan error|Unexpected watch close|"
    r"watch of .* ended|has been compacted|Timeout|code = Internal|rpc error",
    re.I,
)


_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(metrics: dict, name: str, **labels) -> float:
    return sum(v for lbl, v in metrics.get(name, []) if all(lbl.get(k) == w for k, w in labels.items()))


def env_binaries() -> tuple[str | None, str | None]:
    return os.environ.get("KUBE_APISERVER_BIN") or None, os.environ.get("KUBECTL_BIN") or None


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_service_account_keys(d: str) -> tuple[str, str]:
    os.makedirs(d, exist_ok=True)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return os.path.join(d, "sa.key"), os.path.join(d, "sa.pub")


class APIError(Exception):
    def __init__(self, status: int, body: dict | str):
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


@dataclass
class KubeAPIServer:
    binary: str
    workdir: str
    etcd_servers: str
    etcd_tls: tuple[str, str, str] | None = None  # (ca, cert, key)
    event_ttl: str = "5s"
    compaction_interval: str = "10s"
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    ready_after: float | None = None

    def __post_init__(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        self.port = self.port or free_port()
        self.log_path = os.path.join(self.workdir, "kube-apiserver.log")
        self.sa_key, self.sa_pub = make_service_account_keys(os.path.join(self.workdir, "sa"))
        self.token_file = os.path.join(self.workdir, "tokens.csv")
        with open(self.token_file, "w") as f:
            f.write(f'{TOKEN},e2e-admin,e2e-admin-uid,"system:masters"\n')
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            json.dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                "clusters": [{"name": "e2e", "cluster": {
                    "server": self.url, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "e2e", "user": {"token": TOKEN}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
            }, f)
        self._ssl = ssl.create_default_context()
        self._ssl.check_hostname = False
        self._ssl.verify_mode = ssl.CERT_NONE

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [
            self.binary,
            f"--etcd-servers={self.etcd_servers}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={os.path.join(self.workdir, 'certs')}",
            f"--token-auth-file={self.token_file}",
            "--authorization-mode=AlwaysAllow",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--endpoint-reconciler-type=none",
            f"--event-ttl={self.event_ttl}",
            f"--etcd-compaction-interval={self.compaction_interval}",
            "--profiling=false",
            "--v=1",
        ]
        if self.etcd_tls:
            ca, cert, key = self.etcd_tls
            argv += [f"--etcd-cafile={ca}", f"--etcd-certfile={cert}", f"--etcd-keyfile={key}"]
        return argv + self.extra

    # -- process ---------------------------------------------------------

    def start(self, timeout: float = 180.0) -> KubeAPIServer:
        self._log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        self.wait_ready(timeout)
        self.ready_after = time.monotonic() - self.started_at
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            last = self.readyz()
            if last[0] == 200:
                return
            time.sleep(0.25)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s (last /readyz: {last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()

    def log_tail(self, n: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    # -- REST ------------------------------------------------------------

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ssl, timeout=timeout)

    def readyz(self) -> tuple[int, str]:
        return self.probe("/readyz?verbose")

    def etcd_health(self) -> tuple[int, str]:
        """The apiserver's own health check of its store (/livez/etcd)."""
        return self.probe("/livez/etcd")

    def probe(self, path: str) -> tuple[int, str]:
        try:
            conn = self._conn(5)
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
                r = conn.getresponse()
                return r.status, r.read().decode(errors="replace")
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            return 0, str(e)

    def request(self, method: str, path: str, body=None, *, query: dict | None = None,
                content_type: str = "application/json", timeout: float = 30.0) -> dict:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = self._conn(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            raw = r.read().decode(errors="replace")
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = raw
        if r.status >= 400:
            raise APIError(r.status, parsed)
        return parsed

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, query={k: v for k, v in query.items() if v is not None} or None)

    def create(self, path: str, obj: dict) -> dict:
        return self.request("POST", path, obj)

    def delete(self, path: str, body: dict | None = None) -> dict:
        return self.request("DELETE", path, body)

    def patch(self, path: str, patch, kind: str = "merge") -> dict:
        ctype = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json",
                 "json": "application/json-patch+json"}[kind]
        return self.request("PATCH", path, patch, content_type=ctype)

    def status_of(self, method: str, path: str, **query) -> int:
        try:
            self.request(method, path, query=query or None)
            return 200
        except APIError as e:
            return e.status

    def watch(self, path: str, resource_version: str, timeout: float = 30.0, **query) -> Watch:
        q = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "false", **query}
        conn = self._conn(timeout)
        conn.request("GET", path + "?" + urllib.parse.urlencode(q), headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        if r.status != 200:
            body = r.read().decode(errors="replace")
            conn.close()
            raise APIError(r.status, body)
        return Watch(conn, r)

    def metrics(self) -> dict[str, list[tuple[dict, float]]]:
        """/metrics, parsed: name -> [(labels, value)]."""
        conn = self._conn(30)
        try:
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
        finally:
            conn.close()
        assert r.status == 200, text[:500]
        out: dict[str, list[tuple[dict, float]]] = {}
        for line in text.splitlines():
            m = _METRIC.match(line)
            if m:
                labels = dict(_LABEL.findall(m.group(2) or ""))
                out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
        return out

    def kubectl(self, kubectl: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([kubectl, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True,
                              timeout=timeout)


class Watch:
    """One watch response stream: newline-delimited JSON events."""

    def __init__(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse):
        self.conn = conn
        self.resp = resp

    def next(self) -> dict | None:
        """The next event, or None when the server ends the stream."""
        while True:
            line = self.resp.readline()
            if not line:
                return None
            if line.strip():
                return json.loads(line)

    def events(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            ev = self.next()
            if ev is None:
                break
            out.append(ev)
        return out

    def close(self) -> None:
        try:
            self.conn.sock and self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()


class ReadyzMonitor:
    """Polls /readyz and the apiserver's health check of its store
    (/livez/etcd) in the background and records every answer that is not 200,
    so a test can require that readiness, once reached, held."""

    def __init__(self, api: KubeAPIServer, period: float = 0.5):
        self.api = api
        self.period = period
        self.samples = 0
        self.failures: list[tuple[float, int, str]] = []
        self.allowed: list[list[float]] = []  # [start, end] windows where failures are expected
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyzMonitor:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for path in ("/readyz?verbose", "/livez/etcd"):
                t = time.monotonic()
                status, body = self.api.probe(path)
                self.samples += 1
                if status != 200:
                    failed = [ln for ln in body.splitlines() if ln.startswith("[-]")]
                    self.failures.append((t, status, f"{path}: " + ("; ".join(failed) or body[:200])))

    def allow(self, start: float, end: float) -> None:
        self.allowed.append([start, end])

    def unexpected(self) -> list[tuple[float, int, str]]:
        return [f for f in self.failures if not any(a <= f[0] <= b for a, b in self.allowed)]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def scan_log(path: str, windows=(), ignore: tuple[str, ...] = ()) -> list[str]:
    """The apiserver log's etcd error lines: any line matching ETCD_ERROR_PATTERNS
    (except the names in `ignore`), and klog error lines about storage.

    windows: (start, end, allowed) byte ranges of the log. With allowed
    "outage" (the store was down), lines that report the outage pass, and so
    do the patterns an outage explains; the protocol errors never do. With a
    compiled pattern, lines there that match it pass (a test provoked them)."""
    bad = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    for raw in data.split(b"\n"):
        line = raw.decode(errors="replace")
        start = offset
        offset += len(raw) + 1
        here = [allowed for a, b, allowed in windows if a <= start < b]
        if any(allowed != "outage" and allowed.search(line) for allowed in here):
            continue
        named = [(name, ok) for name, rx, ok in ETCD_ERROR_PATTERNS if name not in ignore and rx.search(line)]
        if "outage" in here and all(ok for _, ok in named) and (named or OUTAGE_PATTERNS.search(line)):
            continue
        if named:
            bad.append(f"[{', '.join(n for n, _ in named)}] {line}")
        elif _KLOG_ERROR.match(line) and _STORAGE_WORDS.search(line):
            bad.append(line)
    return bad


def lines_matching(path: str, name: str) -> list[str]:
    rx = {n: rx for n, rx, _ in ETCD_ERROR_PATTERNS}[name]
    with open(path, "rb") as f:
        return [ln for ln in f.read().decode(errors="replace").splitlines() if rx.search(ln)]
