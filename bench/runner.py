"""One run: one workload against one server, with the chosen client, the
server's CPU and memory sampled around the timed window."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench import dataset, etcdload, procstat, pyrun
from bench.harness import Hooks
from bench.progress import Progress
from bench.settings import Settings
from bench.workloads import Workload

_MB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    name: str  # "etcd", "brain", or "endpoint" for a server the run did not start
    endpoint: str
    pid: int | None  # known when the run started the server, or given with --server-pid
    started_here: bool


@dataclass(frozen=True)
class ClientChoice:
    kind: str  # "python" or "etcdload"
    binary: str | None
    why: str


def choose_client(workload: Workload, settings: Settings) -> ClientChoice:
    """The Go generator wherever it has the workload's shape (unless told
    otherwise), the Python client elsewhere; one choice per workload, so
    that every server in a comparison sees the same client."""
    binary = etcdload.find(settings.etcdload_bin)
    if settings.client == "python":
        return ClientChoice("python", None, "--client python")
    if workload.etcdload is None:
        return ClientChoice("python", None, "the Go generator has no request of this shape")
    if workload.name == "watch" and settings.watch_put_rate:
        if settings.client == "etcdload":
            raise RuntimeError("--client etcdload cannot pace its puts: drop --watch-put-rate")
        return ClientChoice("python", None, "the Go generator cannot pace its puts (--watch-put-rate)")
    if binary is None:
        if settings.client == "etcdload":
            raise RuntimeError("--client etcdload: no generator at $ETCDLOAD_BIN or " + etcdload.DEFAULT_PATH)
        return ClientChoice("python", None, "the Go generator is not installed")
    return ClientChoice("etcdload", binary, f"{binary} -w {workload.etcdload}")


class _ServerWatch:
    """Samples of the server process: at the window's start and end for CPU,
    and on every tick for the highest resident set seen."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.first: procstat.ProcSample | None = None
        self.last: procstat.ProcSample | None = None
        self.t0 = self.t1 = 0.0
        self.rss_max = 0

    def _take(self) -> procstat.ProcSample | None:
        s = procstat.sample(self.pid) if self.pid else None
        if s is not None:
            self.rss_max = max(self.rss_max, s.rss_bytes)
        return s

    def start(self) -> None:
        self.first, self.t0 = self._take(), time.monotonic()

    def tick(self) -> None:
        self._take()

    def stop(self) -> None:
        self.last, self.t1 = self._take(), time.monotonic()

    def record(self) -> dict[str, Any]:
        if self.last is None:
            return {"server_cpu_pct": None, "server_rss_mb": None, "server_rss_peak_mb": None}
        return {
            "server_cpu_pct": procstat.cpu_pct(self.first, self.last, self.t1 - self.t0),
            "server_rss_mb": self.rss_max / _MB,
            # VmHWM: the most the process ever held, earlier runs included
            "server_rss_peak_mb": self.last.peak_rss_bytes / _MB,
        }


def run_once(workload: Workload, target: Target, settings: Settings, client: ClientChoice, label: str, show_progress: bool) -> dict[str, Any]:
    if client.kind == "python":
        dataset.prepare(target.endpoint, workload.name, settings.value_size, settings.list_keys)
    server = _ServerWatch(target.pid)
    progress = Progress(label, settings.duration, workload.unit, show_progress)
    try:
        if client.kind == "etcdload":
            args = etcdload.argv(client.binary or "", workload.etcdload or "", target.endpoint, settings, target.pid)
            server.start()

            def tick(elapsed: float) -> None:
                server.tick()
                progress.update(elapsed)

            record = etcdload.run(args, settings, tick)
            server.stop()
            record.update(server.record())
            # the generator measured the server over its own window, which
            # leaves out its setup and warm-up: prefer that figure
            if record.get("server_cpu_pct_etcdload") is not None and target.pid:
                record["server_cpu_pct"] = record["server_cpu_pct_etcdload"]
            record["argv"] = args[1:]
        else:
            def tick_ops(elapsed: float, ops: int) -> None:
                server.tick()
                progress.update(elapsed, ops)

            record = pyrun.run(workload.name, target.endpoint, settings, Hooks(started=server.start, tick=tick_ops, finished=server.stop))
            record.update(server.record())
    finally:
        progress.close()
    record["client_choice"] = client.why
    return record
