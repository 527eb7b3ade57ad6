"""etcdctl 3.5's lease commands and `put --lease` against brain, their output
compared with the same commands against real etcd (lease ids, which each
server picks, and remaining TTLs, which may be a second apart, normalised)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

import pytest

from servers import ServerProcess, brain_server, etcd_server, etcd_tool


def ctl(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        [etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "--command-timeout=10s", *args],
        capture_output=True, text=True, env=env, timeout=30,
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("lease-ctl"))
    etcd, brain = etcd_server(tmp), brain_server(tmp)
    threads = [threading.Thread(target=s.start) for s in (etcd, brain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        for s in (etcd, brain):
            s.wait_ready(5)
        yield etcd, brain
    finally:
        etcd.stop()
        brain.stop()


class Ctl:
    """Runs one etcdctl command on both servers; normalises their output."""

    def __init__(self, etcd: ServerProcess, brain: ServerProcess) -> None:
        self.sides = {"etcd": etcd, "brain": brain}
        self.ids: dict[str, dict[str, str]] = {"etcd": {}, "brain": {}}

    def grant(self, name: str, ttl: int) -> str:
        outs = {}
        for side, srv in self.sides.items():
            r = ctl(srv, "lease", "grant", str(ttl))
            assert r.returncode == 0, r.stderr
            m = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n", r.stdout)
            assert m, r.stdout
            self.ids[side][name] = m.group(1)
            outs[side] = self._norm(side, r.stdout)
        assert outs["etcd"] == outs["brain"], outs
        return outs["brain"]

    def _norm(self, side: str, text: str) -> str:
        for name, hexid in self.ids[side].items():
            text = text.replace(hexid, f"<{name}>").replace(str(int(hexid, 16)), f"<{name}>")
        # per-cluster identity, as `-w fields` prints it
        text = re.sub(r'^"(ClusterID|MemberID|RaftTerm)" : \d+\n', "", text, flags=re.M)
        # etcd prints attached keys in map order
        text = re.sub(r"attached keys\(\[([^\]]*)\]\)", lambda m: "attached keys([%s])" % " ".join(sorted(m.group(1).split())), text)
        return text

    def run(self, *args: str, remaining: bool = False) -> tuple[int, str]:
        outs = {}
        for side, srv in self.sides.items():
            argv = [re.sub(r"<(\w+)>", lambda m: self.ids[side][m.group(1)], a) for a in args]
            r = ctl(srv, *argv)
            # stderr carries the client's timestamped retry log: keep the verdict
            err = [line for line in r.stderr.splitlines() if line.startswith("Error")]
            out = self._norm(side, r.stdout + "\n".join(err))
            outs[side] = (r.returncode, out)
        if remaining:
            # a remaining TTL may be a second apart: compare it within that
            left = {side: [int(x) for x in re.findall(r"remaining\((\d+)s\)", out)] for side, (_, out) in outs.items()}
            assert len(left["etcd"]) == len(left["brain"]) and all(
                abs(a - b) <= 1 for a, b in zip(left["etcd"], left["brain"])
            ), left
            outs = {side: (rc, re.sub(r"remaining\(\d+s\)", "remaining(*)", out)) for side, (rc, out) in outs.items()}
        assert outs["etcd"] == outs["brain"], f"etcdctl {' '.join(args)}\netcd:  {outs['etcd']}\nbrain: {outs['brain']}"
        return outs["brain"]

    def json(self, *args: str) -> list[dict]:
        outs = []
        for side, srv in self.sides.items():
            argv = [re.sub(r"<(\w+)>", lambda m: self.ids[side][m.group(1)], a) for a in args]
            r = ctl(srv, "-w", "json", *argv)
            assert r.returncode == 0, r.stderr
            obj = json.loads(r.stdout)
            for k in ("cluster_id", "member_id", "raft_term"):
                obj.pop(k, None)
                obj.get("header", {}).pop(k, None)
            for name, hexid in self.ids[side].items():
                if obj.get("id") == int(hexid, 16):
                    obj["id"] = name
            if "keys" in obj:
                obj["keys"] = sorted(obj["keys"])
            outs.append(obj)
        a, b = outs
        if "ttl" in a and abs(a["ttl"] - b["ttl"]) <= 1:
            b["ttl"] = a["ttl"]
        assert a == b, f"etcdctl -w json {' '.join(args)}\netcd:  {a}\nbrain: {b}"
        return outs


def test_lease_commands(servers):
    c = Ctl(*servers)
    c.grant("L1", 100)
    c.grant("L2", 300)
    c.run("put", "--lease=<L1>", "k1", "v1")
    c.run("put", "--lease=<L1>", "k2", "v2")
    c.run("put", "--lease=<L2>", "k3", "v3")
    c.run("put", "--lease=1234abcd", "k4", "v4")  # no such lease
    c.run("get", "k", "--prefix", "-w", "fields")
    c.run("lease", "timetolive", "<L1>", remaining=True)
    c.run("lease", "timetolive", "--keys", "<L1>", remaining=True)
    c.json("lease", "timetolive", "--keys", "<L1>")
    c.run("lease", "timetolive", "1234abcd")
    c.run("lease", "list")
    c.run("lease", "keep-alive", "--once", "<L1>")
    c.run("lease", "keep-alive", "--once", "1234abcd")
    c.run("put", "k2", "plain")  # detached from L1
    c.run("lease", "timetolive", "--keys", "<L1>", remaining=True)
    c.run("lease", "revoke", "<L1>")
    c.run("lease", "revoke", "<L1>")
    c.run("get", "k", "--prefix", "-w", "fields")
    c.run("lease", "list")
    c.run("lease", "revoke", "<L2>")
    c.run("lease", "list")
    c.run("get", "k", "--prefix")


def test_keep_alive_command_keeps_a_lease(servers):
    """`etcdctl lease keep-alive` (the long-running form) against brain: it
    renews a 2 s lease past its TTL; once stopped, the lease expires."""
    _, brain = servers
    r = ctl(brain, "lease", "grant", "2")
    lease = r.stdout.split()[1]
    assert ctl(brain, "put", f"--lease={lease}", "ka", "1").returncode == 0
    env = dict(os.environ, ETCDCTL_API="3")
    proc = subprocess.Popen(
        [etcd_tool("etcdctl"), f"--endpoints={brain.endpoint}", "lease", "keep-alive", lease],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        first = proc.stdout.readline()
        assert first == f"lease {lease} keepalived with TTL(2)\n"
        time.sleep(3.0)  # past the TTL
        assert ctl(brain, "get", "ka", "--print-value-only").stdout == "1\n"
    finally:
        proc.terminate()
        proc.wait(10)
    start = time.monotonic()
    while ctl(brain, "get", "ka", "--print-value-only").stdout:
        assert time.monotonic() - start < 4, "the lease outlived its keep-alives"
        time.sleep(0.1)
    assert "already expired" in ctl(brain, "lease", "timetolive", lease).stdout
