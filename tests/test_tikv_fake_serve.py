"""`brain serve --engine tikv` over the fake PD + TiKV (tests/tikv_fake),
driven with etcdctl: puts, gets, a watch; then brain restarted, then the
fake restarted on its data file (SIGTERM, and SIGKILL), the data still
there each time. Skips, saying so, where tikv-client has no wheel."""
from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path

from tikv_fake.process import FakeTikvProcess

from servers import ServerProcess, brain_server, etcd_tool


def run_ctl(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "--command-timeout=20s", *args],
        capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"), timeout=60,
    )


def ctl(srv: ServerProcess, *args: str) -> str:
    done = run_ctl(srv, *args)
    assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def kvs(srv: ServerProcess, prefix: str) -> dict[str, str]:
    out = ctl(srv, "get", "--prefix", prefix, "-w", "json")
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in json.loads(out).get("kvs", [])}


def watched(watch: subprocess.Popen, until: tuple[str, str], limit: float = 20.0) -> list[tuple[str, ...]]:
    """etcdctl watch's events (PUT key value / DELETE key) up to `until`."""
    assert watch.stdout is not None
    fd = watch.stdout.fileno()
    out = b""
    deadline = time.monotonic() + limit
    # (no empty values here: etcdctl ends a DELETE with an empty line)
    while tuple(out.decode().split()[-2:]) != until:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"watch saw only {out!r}"
        chunk = os.read(fd, 65536)  # unbuffered: select() sees what is left
        assert chunk, f"watch ended after {out!r}"
        out += chunk
    lines = out.decode().split()
    events: list[tuple[str, ...]] = []
    i = 0
    while i < len(lines):
        n = 3 if lines[i] == "PUT" else 2
        events.append(tuple(lines[i:i + n]))
        i += n
    return events


def test_brain_on_the_fake_keeps_its_data_across_restarts(tmp_path: Path, fake_tikv: FakeTikvProcess):
    fake = fake_tikv
    brain = brain_server(str(tmp_path), "--tikv-pd-endpoints", fake.pd_endpoint, engine="tikv").start()
    try:
        start = json.loads(ctl(brain, "get", "x", "-w", "json"))["header"]["revision"] + 1
        watch = subprocess.Popen(  # from the next revision: no write is missed however late it starts
            [etcd_tool("etcdctl"), f"--endpoints={brain.endpoint}", "watch", "--prefix", "/registry/", f"--rev={start}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, ETCDCTL_API="3"),
        )
        want = [("PUT", "/registry/a", "1"), ("PUT", "/registry/b", "2"), ("PUT", "/registry/a", "3"), ("DELETE", "/registry/b")]
        try:
            ctl(brain, "put", "/registry/a", "1")
            ctl(brain, "put", "/registry/b", "2")
            ctl(brain, "put", "/registry/a", "3")
            ctl(brain, "del", "/registry/b")
            assert kvs(brain, "/registry/") == {"/registry/a": "3"}
            rev = json.loads(ctl(brain, "get", "/registry/a", "-w", "json"))["header"]["revision"]
            assert watched(watch, until=("DELETE", "/registry/b")) == want
        finally:
            watch.terminate()
            watch.wait()

        brain.restart()  # data and revision come back from TiKV
        assert kvs(brain, "/registry/") == {"/registry/a": "3"}
        assert json.loads(ctl(brain, "get", "/registry/a", "-w", "json"))["header"]["revision"] == rev
        watch = subprocess.Popen(  # the history too: a watch from the old revision replays it
            [etcd_tool("etcdctl"), f"--endpoints={brain.endpoint}", "watch", "--prefix", "/registry/", f"--rev={start}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, ETCDCTL_API="3"),
        )
        try:
            assert watched(watch, until=("DELETE", "/registry/b")) == want
        finally:
            watch.terminate()
            watch.wait()
        ctl(brain, "put", "/registry/c", "4")

        brain.stop()
        fake.restart()  # SIGTERM; the same ports, its sqlite file
        brain.start()
        assert kvs(brain, "/registry/") == {"/registry/a": "3", "/registry/c": "4"}

        fake.kill()  # SIGKILL under a running brain: it must come back to the restarted fake
        fake.start()
        # tikv-client 0.0.4 does not reopen PD's timestamp stream at once: the
        # first requests after PD restarts fail ("TimestampRequest channel is
        # closed", as etcd's Unavailable), and it reconnects within a second or so
        deadline = time.monotonic() + 15
        while (done := run_ctl(brain, "put", "/registry/d", "5")).returncode != 0:
            assert time.monotonic() < deadline, f"brain never recovered from the fake's restart: {done.stderr}"
            time.sleep(0.2)
        assert kvs(brain, "/registry/") == {"/registry/a": "3", "/registry/c": "4", "/registry/d": "5"}
        assert int(json.loads(ctl(brain, "get", "/registry/d", "-w", "json"))["header"]["revision"]) == rev + 2
    finally:
        brain.stop()
