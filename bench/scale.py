"""`brain bench --scale N`: a store of N pod-sized keys, measured the way a
large cluster uses it.

For each server (etcd, then brain, with --compare), on a fresh data dir:
load N keys under /registry/pods/ with Txns of many puts, then, while a
probe process on its own connection gets one key every 10 ms with a 1 s
deadline, run kube-apiserver's paged list (limit 500, revision pinned by the
first page), count-only ranges, and one unpaged range of everything; then
read memory and disk, restart after SIGTERM and after SIGKILL, and time how
long each takes to serve again. The probe's latencies are reported per phase.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from bench import procstat, scale_day2
from bench.servers import ManagedServer
from brain.etcdpb import rpc_pb2 as pb, rpc_pb2_grpc

PREFIX = b"/registry/pods/"
PREFIX_END = b"/registry/pods0"
PROBE_EVERY_S = 0.01
PROBE_DEADLINE_S = 1.0
# updates of loaded keys by one client at a steady rate, before the big reads:
# the latency of a write at this size, with nothing else running
STEADY_PUTS_PER_S = 100.0
STEADY_PUTS_S = 3.0
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def pod_key(i: int) -> bytes:
    return PREFIX + b"ns-%03d/pod-%08d" % (i % 1000, i)


@dataclass
class ScaleSettings:
    keys: int
    value_size: int = 1024
    txn_puts: int = 100
    inflight: int = 8
    page_size: int = 500
    counts: int = 5
    restarts: bool = True
    # one range of every key: its response is as large as the data, and the
    # client holds it whole (leave it out where that is more than memory)
    unpaged: bool = True
    # a snapshot streamed to a file (probe running), then restored
    snapshot: bool = True
    # last, one DeleteRange of every loaded key (probe running)
    delete: bool = True


# -- the probe: its own process and connection ---------------------------------

def _probe_main(endpoint: str, key: bytes, conn: Any) -> None:
    samples: list[tuple[float, float | None]] = []
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        req = pb.RangeRequest(key=key)
        conn.send("ready")
        while not conn.poll():
            t0 = time.monotonic()
            try:
                kv.Range(req, timeout=PROBE_DEADLINE_S)
                samples.append((t0, (time.monotonic() - t0) * 1000))
            except grpc.RpcError:
                samples.append((t0, None))
            pause = PROBE_EVERY_S - (time.monotonic() - t0)
            if pause > 0:
                time.sleep(pause)
    conn.send(samples)


class Probe:
    def __init__(self, endpoint: str, key: bytes) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_probe_main, args=(endpoint, key, child), daemon=True)
        self._proc.start()
        self._conn.recv()

    def stop(self) -> list[tuple[float, float | None]]:
        self._conn.send("stop")
        samples = self._conn.recv()
        self._proc.join(10)
        return samples


def probe_figures(samples: list[tuple[float, float | None]], start: float, end: float) -> dict[str, Any]:
    inside = [lat for t, lat in samples if start <= t <= end]
    ok = sorted(lat for lat in inside if lat is not None)
    out: dict[str, Any] = {"probes": len(inside), "timeouts": len(inside) - len(ok)}
    if ok:
        out.update(p50_ms=_pct(ok, 50), p99_ms=_pct(ok, 99), max_ms=ok[-1])
    return out


def _pct(sorted_values: list[float], p: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]


# -- phases --------------------------------------------------------------------

def load(endpoint: str, s: ScaleSettings, progress: Callable[[int], None]) -> float:
    """N keys in Txns of txn_puts puts, inflight Txns at a time; keys/s."""
    # like a pod's protobuf: half shared with every other pod, half its own
    # (hex, so a compressing engine halves it); no engine stores these
    # values much smaller than they are
    shared = os.urandom(s.value_size).hex().encode()[: s.value_size - s.value_size // 2]
    own = s.value_size // 2
    batches = range(0, s.keys, s.txn_puts)
    lock = threading.Lock()
    channels = [grpc.insecure_channel(endpoint, options=_UNLIMITED) for _ in range(2)]
    try:
        stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]

        def one(i: int) -> None:
            n = min(s.txn_puts, s.keys - i)
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=pod_key(j), value=shared + os.urandom(own // 2 + 1).hex().encode()[:own]))
                   for j in range(i, i + n)]
            stubs[(i // s.txn_puts) % 2].Txn(pb.TxnRequest(success=ops), timeout=60)
            with lock:
                progress(n)

        t0 = time.monotonic()
        with ThreadPoolExecutor(s.inflight) as pool:
            for f in [pool.submit(one, i) for i in batches]:
                f.result()
        return s.keys / (time.monotonic() - t0)
    finally:
        for ch in channels:
            ch.close()


def paged_list(kv: Any, page_size: int, pace: float | None = None, max_s: float | None = None) -> dict[str, Any]:
    """kube-apiserver's list: pages of page_size at the first page's
    revision; with pace, at most that many pages a second, for at most max_s."""
    t0 = time.monotonic()
    resp = kv.Range(pb.RangeRequest(key=PREFIX, range_end=PREFIX_END, limit=page_size), timeout=600)
    first_ms = (time.monotonic() - t0) * 1000
    rev, pages, seen, count0 = resp.header.revision, 1, len(resp.kvs), resp.count
    while resp.more:
        if pace:
            wait = t0 + pages / pace - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if max_s is not None and time.monotonic() - t0 > max_s:
                break
        nxt = resp.kvs[-1].key + b"\x00"
        resp = kv.Range(pb.RangeRequest(key=nxt, range_end=PREFIX_END, limit=page_size, revision=rev), timeout=600)
        pages += 1
        seen += len(resp.kvs)
    wall = time.monotonic() - t0
    return {"pages": pages, "keys": seen, "first_count": count0, "seconds": wall,
            "pages_per_s": pages / wall, "first_page_ms": first_ms}


def steady_puts(kv: Any, s: ScaleSettings, rate: float = STEADY_PUTS_PER_S, seconds: float = STEADY_PUTS_S) -> dict[str, Any]:
    """Puts to loaded keys, one at a time, at most `rate` a second, for
    `seconds`: each put's latency."""
    value = os.urandom(s.value_size // 2 + 1).hex().encode()[: s.value_size]
    lat: list[float] = []
    step = max(1, s.keys // int(rate * seconds + 1))
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        wait = t0 + len(lat) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t = time.monotonic()
        kv.Put(pb.PutRequest(key=pod_key(i), value=value), timeout=10)
        lat.append((time.monotonic() - t) * 1000)
        i = (i + step) % s.keys
    lat.sort()
    return {"puts": len(lat), "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": lat[-1]}


def counts(kv: Any, n: int) -> dict[str, Any]:
    lat = []
    total = 0
    for _ in range(n):
        t0 = time.monotonic()
        total = kv.Range(pb.RangeRequest(key=PREFIX, range_end=PREFIX_END, count_only=True), timeout=600).count
        lat.append((time.monotonic() - t0) * 1000)
    return {"count": total, "median_ms": statistics.median(lat), "max_ms": max(lat)}


def unpaged(kv: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    resp = kv.Range(pb.RangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=1800)
    return {"keys": len(resp.kvs), "seconds": time.monotonic() - t0}


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _rss(srv: ManagedServer) -> int | None:
    s = procstat.sample(srv.pid) if srv.pid else None
    return s.rss_bytes if s else None


def _anon(srv: ManagedServer) -> int | None:
    """The process's own memory, without the pages of the files it maps."""
    s = procstat.sample(srv.pid) if srv.pid else None
    return s.anon_bytes if s else None


def restart(srv: ManagedServer, kill: bool) -> float:
    """Seconds from the new process's start to its first answered Range."""
    assert srv.proc is not None
    if kill:
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
    else:
        srv.stop()
    t0 = time.monotonic()
    srv.start()
    return time.monotonic() - t0


# After the load, a server may go on working on its own (LevelDB compacts
# what was written): the probe's figures are taken once it is quiet, and how
# long that took is reported.
QUIET_CPU_PCT = 10.0
QUIET_FOR_S = 3
QUIET_AT_MOST_S = 300.0


def quiet_after_load(srv: ManagedServer) -> float:
    """Seconds until the server used less than QUIET_CPU_PCT of a core for
    QUIET_FOR_S seconds in a row (at most QUIET_AT_MOST_S)."""
    t0 = time.monotonic()
    pid = srv.pid
    if not pid:
        return 0.0
    quiet = 0
    last = procstat.sample(pid)
    while quiet < QUIET_FOR_S and time.monotonic() - t0 < QUIET_AT_MOST_S and last is not None:
        time.sleep(1.0)
        now = procstat.sample(pid)
        pct = procstat.cpu_pct(last, now, 1.0)
        quiet = quiet + 1 if pct is not None and pct < QUIET_CPU_PCT else 0
        last = now
    return time.monotonic() - t0


def _settled_rss(srv: ManagedServer, seconds: float = 10.0) -> int | None:
    time.sleep(seconds)
    return _rss(srv)


PACED_LIST_S = 30.0


def measure(srv: ManagedServer, s: ScaleSettings, echo: Callable[[str], None], progress: Callable[[str, int], Callable[[int], None]],
            pace: float | None = None) -> dict[str, Any]:
    """pace: also run the paged list at this many pages a second (another
    server's rate) for PACED_LIST_S, so the probe is compared at equal work."""
    out: dict[str, Any] = {"server": srv.name}
    rate = load(srv.endpoint, s, progress(f"load {srv.name}", s.keys))
    out["load_keys_per_s"] = rate
    echo(f"  {srv.name}: loaded {s.keys:,} keys at {rate:,.0f} keys/s")
    out["quiet_after_load_s"] = quiet_after_load(srv)
    echo(f"  {srv.name}: quiet {out['quiet_after_load_s']:.0f} s after the load")
    out["rss_after_load"] = _rss(srv)
    out["anon_after_load"] = _anon(srv)
    probe = Probe(srv.endpoint, pod_key(s.keys // 2))
    phases: dict[str, tuple[float, float]] = {}
    with grpc.insecure_channel(srv.endpoint, options=_UNLIMITED) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        time.sleep(1)
        t = time.monotonic()
        time.sleep(2)
        phases["idle"] = (t, time.monotonic())
        out["steady_puts"] = steady_puts(kv, s)
        echo(f"  {srv.name}: puts at {STEADY_PUTS_PER_S:.0f}/s: p50 {out['steady_puts']['p50_ms']:.2f} ms, p99 {out['steady_puts']['p99_ms']:.2f} ms")
        t = time.monotonic()
        out["paged_list"] = paged_list(kv, s.page_size)
        phases["paged_list"] = (t, time.monotonic())
        echo(f"  {srv.name}: paged list {out['paged_list']['pages_per_s']:.2f} pages/s, first page {out['paged_list']['first_page_ms']:.0f} ms")
        if pace:
            t = time.monotonic()
            out["paged_list_paced"] = paged_list(kv, s.page_size, pace, PACED_LIST_S)
            phases["paged_list_paced"] = (t, time.monotonic())
            echo(f"  {srv.name}: paged list paced at {pace:.2f} pages/s for {PACED_LIST_S:.0f} s")
        t = time.monotonic()
        out["count"] = counts(kv, s.counts)
        phases["count"] = (t, time.monotonic())
        echo(f"  {srv.name}: count-only {out['count']['median_ms']:.2f} ms")
        if s.unpaged:
            t = time.monotonic()
            out["unpaged"] = unpaged(kv)
            phases["unpaged"] = (t, time.monotonic())
            echo(f"  {srv.name}: unpaged range {out['unpaged']['seconds']:.2f} s")
        if s.snapshot:
            t = time.monotonic()
            out["snapshot_save"] = scale_day2.snapshot_save(srv, os.path.join(srv.workdir, "snapshot.db"))
            phases["snapshot"] = (t, time.monotonic())
            echo(f"  {srv.name}: snapshot of {out['snapshot_save']['bytes'] / 1e6:,.0f} MB in {out['snapshot_save']['seconds']:.1f} s")
    out["rss_after_unpaged"] = _rss(srv)  # after the last big read, unpaged or not
    out["anon_after_unpaged"] = _anon(srv)
    samples = probe.stop()
    out["probe"] = {name: probe_figures(samples, a, b) for name, (a, b) in phases.items()}
    big = [(a, b) for name, (a, b) in phases.items() if name not in ("idle", "paged_list_paced", "snapshot")]
    out["probe"]["during_big_reads"] = probe_figures([x for x in samples if any(a <= x[0] <= b for a, b in big)], 0, float("inf"))
    out["rss_settled_after_unpaged"] = _settled_rss(srv)
    out["anon_settled_after_unpaged"] = _anon(srv)
    out["disk_bytes"] = _du(os.path.join(srv.workdir, "data"))
    if s.snapshot:
        snap, restored = os.path.join(srv.workdir, "snapshot.db"), os.path.join(srv.workdir, "restored")
        out["snapshot_restore"] = scale_day2.snapshot_restore(srv.name, snap, restored)
        echo(f"  {srv.name}: snapshot restored in {out['snapshot_restore']['seconds']:.1f} s")
        scale_day2.cleanup(snap, restored)
    if s.restarts:
        out["restart_clean_s"] = restart(srv, kill=False)
        out["rss_after_restart"] = _settled_rss(srv, 5)
        out["restart_kill_s"] = restart(srv, kill=True)
        echo(f"  {srv.name}: restart {out['restart_clean_s']:.1f} s (SIGTERM), {out['restart_kill_s']:.1f} s (SIGKILL)")
    return out


def delete_everything(srv: ManagedServer, s: ScaleSettings) -> dict[str, Any]:
    """One DeleteRange of every loaded key (a namespace of that size deleted
    at once), the probe running: how long it takes, and the probe's figures
    while it runs."""
    probe = Probe(srv.endpoint, pod_key(s.keys // 2))
    with grpc.insecure_channel(srv.endpoint, options=_UNLIMITED) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        time.sleep(1)
        t0 = time.monotonic()
        error = None
        try:
            deleted = kv.DeleteRange(pb.DeleteRangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=3600).deleted
        except grpc.RpcError as e:
            # etcd answers "request timed out" when applying the delete takes
            # longer than its request timeout, and applies it all the same:
            # the figure is then the time until the keys are gone
            error = f"{e.code().name}: {e.details()}"
            deleted = s.keys - _wait_until_gone(kv)
        t1 = time.monotonic()
        time.sleep(0.5)
    samples = probe.stop()
    out = {"deleted": deleted, "seconds": t1 - t0, "probe": probe_figures(samples, t0, t1)}
    if error is not None:
        out["error"] = error
    return out


def _wait_until_gone(kv: Any, poll_s: float = 0.25, max_s: float = 3600) -> int:
    """Poll the loaded keys' count until it is 0 (or max_s passes): what is left."""
    deadline = time.monotonic() + max_s
    while True:
        try:
            left = kv.Range(pb.RangeRequest(key=PREFIX, range_end=PREFIX_END, count_only=True), timeout=60).count
        except grpc.RpcError:
            left = -1  # busy applying the delete: ask again
        if left == 0 or time.monotonic() > deadline:
            return max(left, 0)
        time.sleep(poll_s)


def server_argv_extra(kind: str) -> tuple[str, ...]:
    """The default 2 GiB quota (both servers') is too small for a large run:
    etcd gets 8 GiB, its recommended maximum; brain, meant to go past it,
    none (a negative quota)."""
    return ("--quota-backend-bytes", str(8 << 30)) if kind == "etcd" else ("--quota-backend-bytes", "-1")
