"""etcdctl 3.5 `watch` against brain, its output compared with the same
command against real etcd given the same writes."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time

import pytest

from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc
from servers import ServerProcess, brain_server, etcd_server, etcd_tool


class Watch:
    """A running `etcdctl watch`, its output read line by line."""

    def __init__(self, srv: ServerProcess, *args: str, stdin: bool = False) -> None:
        env = dict(os.environ, ETCDCTL_API="3")
        self.proc = subprocess.Popen(
            [etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "watch", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def output(self, quiet: float = 0.7, limit: float = 15.0) -> list[str]:
        """Lines until none come for `quiet` seconds (or the command ends)."""
        out: list[str] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=quiet)
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        return out

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Pair:
    def __init__(self, etcd: ServerProcess, brain: ServerProcess) -> None:
        self.servers = (etcd, brain)
        self.channels = [s.channel() for s in self.servers]
        self.kv = [rpc_pb2_grpc.KVStub(c) for c in self.channels]

    def put(self, key: bytes, value: bytes) -> int:
        revs = {s.Put(pb.PutRequest(key=key, value=value), timeout=10).header.revision for s in self.kv}
        assert len(revs) == 1
        return revs.pop()

    def delete(self, key: bytes, end: bytes = b"") -> None:
        for s in self.kv:
            s.DeleteRange(pb.DeleteRangeRequest(key=key, range_end=end), timeout=10)

    def compact(self, rev: int) -> None:
        for s in self.kv:
            s.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=10)

    def watch_both(self, *args: str, quiet: float = 0.7) -> list[str]:
        """Start `etcdctl watch args` on both, take their output, stop them."""
        watches = [Watch(s, *args) for s in self.servers]
        outs = [w.output(quiet) for w in watches]
        codes = [w.stop() for w in watches]
        assert outs[0] == outs[1], f"etcdctl watch {' '.join(args)}\netcd:  {outs[0]}\nbrain: {outs[1]}"
        assert codes[0] == codes[1], f"etcdctl watch {' '.join(args)}: exit codes {codes}"
        return outs[1]


@pytest.fixture(scope="module", params=["grpcio", "h2"])
def pair(request, tmp_path_factory):
    """etcd and brain, brain on each of its gRPC servers."""
    tmp = str(tmp_path_factory.mktemp("watchctl"))
    servers = [etcd_server(tmp), brain_server(tmp, "--transport", request.param)]
    threads = [threading.Thread(target=s.start) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p = Pair(*servers)
    yield p
    for c in p.channels:
        c.close()
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def history(pair):
    """Writes under /w/: puts, updates, a delete and a re-create."""
    first = pair.put(b"/w/a", b"1")
    pair.put(b"/w/b", b"1")
    pair.put(b"/w/a", b"2")
    pair.put(b"/x", b"outside")
    pair.delete(b"/w/b")
    pair.put(b"/w/b", b"again")
    pair.put(b"/w/c/d", b"deep")
    return first


def test_watch_rev_prefix_prev_kv(pair, history):
    out = pair.watch_both("--rev", str(history), "--prefix", "/w/", "--prev-kv")
    assert out.count("DELETE") == 1 and out.count("PUT") == 5
    assert out[:3] == ["PUT", "/w/a", "1"]


def test_watch_rev_single_key_and_range(pair, history):
    out = pair.watch_both("--rev", str(history), "/w/a")
    assert out == ["PUT", "/w/a", "1", "PUT", "/w/a", "2"]
    out = pair.watch_both("--rev", str(history), "/w/b", "/w/d")
    assert out.count("PUT") == 3


def test_watch_json_events(pair, history):
    def events(srv: ServerProcess) -> list:
        w = Watch(srv, "-w", "json", "--rev", str(history), "--prefix", "/w/", "--prev-kv")
        lines = w.output()
        w.stop()
        evs = []
        for line in lines:
            doc = json.loads(line)
            evs.extend(doc.get("Events") or [])
        return evs

    a, b = (events(s) for s in pair.servers)
    assert a == b and len(a) == 6


def test_watch_live_then_interactive(pair):
    watches = [Watch(s, "--prefix", "/live/", "--prev-kv") for s in pair.servers]
    time.sleep(1.0)  # etcdctl prints nothing once the watch is set up
    pair.put(b"/live/a", b"1")
    pair.put(b"/live/a", b"2")
    pair.delete(b"/live/", b"/live0")
    outs = [w.output() for w in watches]
    for w in watches:
        w.stop()
    assert outs[0] == outs[1] and outs[1] == [
        "PUT", "/live/a", "1", "PUT", "/live/a", "1", "/live/a", "2", "DELETE", "/live/a", "2", "/live/a", "",
    ]

    watches = [Watch(s, "-i", stdin=True) for s in pair.servers]
    for w in watches:
        w.command("watch /live/i")
        w.command("watch --prefix /live/j")
    time.sleep(1.0)
    pair.put(b"/live/i", b"x")
    pair.put(b"/live/jj", b"y")
    outs = [sorted(w.output()) for w in watches]  # two watches: their lines may interleave
    for w in watches:
        w.stop()
    assert outs[0] == outs[1] and len(outs[1]) == 6


def test_watch_compacted_revision(pair, history):
    rev = pair.put(b"/w/z", b"1")
    pair.compact(rev)
    out = pair.watch_both("--rev", str(history), "/w/")
    assert any("compacted" in line for line in out), out
