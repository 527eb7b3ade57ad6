"""Logs are JSON lines as etcd's (zap) are, and start errors end in one
fatal line and a non-zero exit."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import brain_server


def _lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("E") and " add_port.cc:" in line:
            continue  # grpcio's own C-core line, not ours
        out.append(json.loads(line))  # every line is one JSON object
    return out


def _serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brain", "serve", *args], capture_output=True, text=True, timeout=timeout)


def test_log_lines_are_json_even_with_quotes(tmp_path):
    odd = tmp_path / 'data "quoted" \\ dir'
    srv = brain_server(str(tmp_path), data_dir=str(odd)).start()
    with srv.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
    srv.stop()
    with open(srv.log_path) as f:
        records = _lines(f.read())
    assert any(str(odd) in r["msg"] for r in records), "the data dir, quotes and all, appears in a message"
    for r in records:
        assert {"level", "ts", "logger", "caller", "msg"} <= set(r)
        assert r["level"] in ("debug", "info", "warn", "error")
        ts = datetime.datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        assert ts.tzinfo is not None and r["ts"].endswith("Z")


def test_port_in_use_is_one_fatal_line(tmp_path):
    srv = brain_server(str(tmp_path)).start()
    try:
        for transport in ("h2", "grpcio"):
            r = _serve("--data-dir", str(tmp_path / f"other-{transport}"), "--listen-client-urls", f"http://127.0.0.1:{srv.port}",
                       "--transport", transport, "--log-level", "warn")
            assert r.returncode == 1
            (line,) = _lines(r.stderr)
            assert line["level"] == "fatal" and f"listen tcp 127.0.0.1:{srv.port}: bind" in line["msg"], r.stderr
    finally:
        srv.stop()


def test_locked_data_dir_is_one_fatal_line(tmp_path):
    srv = brain_server(str(tmp_path)).start()
    try:
        r = _serve("--data-dir", srv.data_dir, "--listen-client-urls", "http://127.0.0.1:0", "--log-level", "warn")
        assert r.returncode == 1
        (line,) = _lines(r.stderr)
        assert line["level"] == "fatal" and "in use by another brain process" in line["msg"]
    finally:
        srv.stop()


def test_bad_flag_is_one_fatal_line(tmp_path):
    r = _serve("--no-such-flag")
    assert r.returncode == 2
    (line,) = _lines(r.stderr)
    assert line["level"] == "fatal" and "--no-such-flag" in line["msg"]
