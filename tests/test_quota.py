"""--quota-backend-bytes and alarms: etcd 3.5 and brain given the same small
quota and the same writes, their answers compared step by step (refusals,
alarm lists, Status errors, etcdctl's output, what stays served, disarm,
persistence across a restart).

The two databases do not grow alike (bbolt pages against LevelDB files, and
etcd measures its size only at its backend commits), so each server is
filled until it refuses, and what is compared is everything from there on.
"""
from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import brain_server, etcd_server, etcd_tool

QUOTA = 1 << 20
ROOMY = 64 << 20
OVER_QUOTA_PUTS = 100  # twice the quota's worth of values
VALUE_BYTES = 20_000
MAX_FILL_PUTS = 3000  # far more than the quota holds, on either server
NOSPACE = ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded")


def ctl(srv, *args: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [etcd_tool("etcdctl"), f"--endpoints={srv.endpoint}", "--command-timeout=10s", *args],
        capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"), timeout=30,
    )
    # etcdctl's client logs its retries as JSON lines with timestamps and
    # addresses; its own last line is what a user reads
    err = [line for line in r.stderr.splitlines() if not line.startswith("{")]
    return r.returncode, r.stdout, "\n".join(err)


def call(fn, req) -> tuple[str, str]:
    try:
        fn(req, timeout=10)
    except grpc.RpcError as e:
        return e.code().name, e.details()
    return "OK", ""


def put(key: bytes, value: bytes = b"v") -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value)


class Client:
    def __init__(self, srv) -> None:
        self.srv = srv
        self.ch = srv.channel()
        self.kv = rpc_pb2_grpc.KVStub(self.ch)
        self.lease = rpc_pb2_grpc.LeaseStub(self.ch)
        self.m = rpc_pb2_grpc.MaintenanceStub(self.ch)
        self.member = self.m.Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id

    def close(self) -> None:
        self.ch.close()

    def own(self, text: str) -> str:
        """Server-specific member IDs replaced, so answers compare."""
        return text.replace(str(self.member), "SELF").replace(format(self.member, "x"), "SELF")

    def alarms(self, action=rpc_pb2.AlarmRequest.GET, member: int = 0, alarm: int = rpc_pb2.NONE) -> list[tuple[str, str]]:
        resp = self.m.Alarm(rpc_pb2.AlarmRequest(action=action, memberID=member, alarm=alarm), timeout=10)
        return sorted((self.own(str(a.memberID)), rpc_pb2.AlarmType.Name(a.alarm)) for a in resp.alarms)

    def status_errors(self) -> list[str]:
        return sorted(self.own(e) for e in self.m.Status(rpc_pb2.StatusRequest(), timeout=10).errors)

    def fill(self) -> tuple[int, tuple[str, str]]:
        """Put values until the server refuses one: (puts accepted, the refusal)."""
        for i in range(MAX_FILL_PUTS):
            outcome = call(self.kv.Put, put(b"fill/%05d" % i, os.urandom(VALUE_BYTES)))
            if outcome != ("OK", ""):
                return i, outcome
        return MAX_FILL_PUTS, ("OK", "")


def txn_with_put_on_failure() -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"nothing", target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.EQUAL, version=1)],
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"fill/00000"))],
        failure=[rpc_pb2.RequestOp(request_put=put(b"t"))],
    )


def over_quota(c: Client) -> list:
    """What the server answers once a write has been refused for space."""
    seen: list = []
    seen.append(("alarm get", c.alarms()))
    seen.append(("alarm get NOSPACE", c.alarms(alarm=rpc_pb2.NOSPACE)))
    seen.append(("alarm get CORRUPT", c.alarms(alarm=rpc_pb2.CORRUPT)))
    seen.append(("status errors", c.status_errors()))
    seen.append(("put", call(c.kv.Put, put(b"small"))))
    seen.append(("lease grant", call(c.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=60))))
    seen.append(("txn put on failure", call(c.kv.Txn, txn_with_put_on_failure())))
    # served whatever the space: reads, deletes, compaction, defragmentation
    r = c.kv.Range(rpc_pb2.RangeRequest(key=b"fill/00000"), timeout=10)
    seen.append(("range", len(r.kvs), r.kvs[0].version))
    seen.append(("delete", c.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"fill/00001"), timeout=10).deleted))
    rev = c.kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10).header.revision
    seen.append(("compact", call(c.kv.Compact, rpc_pb2.CompactionRequest(revision=rev))))
    seen.append(("defragment", call(c.m.Defragment, rpc_pb2.DefragmentRequest())))
    code, out, err = ctl(c.srv, "put", "k", "v")
    seen.append(("etcdctl put", code, out, err))
    code, out, err = ctl(c.srv, "alarm", "list")
    seen.append(("etcdctl alarm list", code, c.own(out), err))
    return seen


def disarm_and_refill(c: Client) -> list:
    """Disarm while the database is still over the quota: the next write
    measures it again, is refused and raises the alarm again."""
    seen: list = []
    code, out, err = ctl(c.srv, "alarm", "disarm")
    seen.append(("etcdctl alarm disarm", code, c.own(out), err))
    seen.append(("alarm get after disarm", c.alarms()))
    seen.append(("etcdctl alarm disarm again", ctl(c.srv, "alarm", "disarm")))
    seen.append(("put after disarm", call(c.kv.Put, put(b"small"))))
    seen.append(("alarm get after refusal", c.alarms()))
    return seen


def client_alarms(c: Client) -> list:
    """ACTIVATE and DEACTIVATE by a client, for another member too."""
    other = 5
    A = rpc_pb2.AlarmRequest
    seen: list = []
    seen.append(("activate NONE", c.alarms(A.ACTIVATE, other, rpc_pb2.NONE)))
    seen.append(("activate other", c.alarms(A.ACTIVATE, other, rpc_pb2.NOSPACE)))
    seen.append(("activate other again", c.alarms(A.ACTIVATE, other, rpc_pb2.NOSPACE)))
    seen.append(("get", c.alarms()))
    seen.append(("status errors", c.status_errors()))
    seen.append(("deactivate unknown", c.alarms(A.DEACTIVATE, 7, rpc_pb2.NOSPACE)))
    seen.append(("deactivate other", c.alarms(A.DEACTIVATE, other, rpc_pb2.NOSPACE)))
    seen.append(("get after", c.alarms()))
    return seen


def set_flag(srv, flag: str, value: str) -> None:
    i = srv.argv.index(flag)
    srv.argv[i + 1] = value


def scenario(srv) -> list:
    c = Client(srv)
    try:
        seen: list = [("alarms at start", c.alarms()), ("status errors at start", c.status_errors())]
        accepted, refusal = c.fill()
        assert accepted > 0, f"{srv.kind} refused the first put"
        seen.append(("fill refused with", refusal))
        seen.append(("alarm get after fill", c.alarms()))
        seen.append(("disarm", c.alarms(rpc_pb2.AlarmRequest.DEACTIVATE, c.member, rpc_pb2.NOSPACE)))
    finally:
        c.close()
    # Where each server stops the fill depends on how its database grows;
    # grown well past the quota under a roomy one, both are surely over it
    # once restarted with it, whatever they reclaim.
    set_flag(srv, "--quota-backend-bytes", str(ROOMY))
    srv.restart()
    c = Client(srv)
    try:
        for i in range(OVER_QUOTA_PUTS):
            c.kv.Put(put(b"more/%05d" % i, os.urandom(VALUE_BYTES)), timeout=10)
    finally:
        c.close()
    set_flag(srv, "--quota-backend-bytes", str(QUOTA))
    srv.restart()
    c = Client(srv)
    try:
        seen.append(("put over the quota", call(c.kv.Put, put(b"small"))))
        seen += over_quota(c)
        seen += disarm_and_refill(c)
        seen += client_alarms(c)
    finally:
        c.close()
    # the alarm survives a restart, even one with room to spare; a disarm
    # then lets writes through
    set_flag(srv, "--quota-backend-bytes", str(ROOMY))
    srv.restart()
    c = Client(srv)
    try:
        seen.append(("alarm get after restart", c.alarms()))
        seen.append(("put after restart", call(c.kv.Put, put(b"small"))))
        seen.append(("etcdctl alarm disarm after restart", c.own(ctl(srv, "alarm", "disarm")[1])))
        seen.append(("put with room", call(c.kv.Put, put(b"small"))))
        seen.append(("lease grant with room", call(c.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=60))))
        seen.append(("alarms with room", c.alarms()))
    finally:
        c.close()
    return seen


def test_quota_and_alarms_like_etcd(tmp_path):
    etcd = etcd_server(str(tmp_path), "--quota-backend-bytes", str(QUOTA)).start()
    try:
        want = scenario(etcd)
    finally:
        etcd.stop()
    brain = brain_server(str(tmp_path), "--quota-backend-bytes", str(QUOTA)).start()
    try:
        got = scenario(brain)
    finally:
        brain.stop()
    assert ("fill refused with", NOSPACE) in got
    assert ("alarm get", [("SELF", "NOSPACE")]) in got
    assert ("put over the quota", NOSPACE) in got
    for w, g in zip(want, got):
        assert g == w, f"etcd:  {w}\nbrain: {g}"
    assert len(got) == len(want)
    print("compared:", *got, sep="\n  ")


def read_only_txn_flow(srv) -> list:
    read = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"more/00000"))])
    seen: list = []
    c = Client(srv)
    try:
        for i in range(OVER_QUOTA_PUTS):
            c.kv.Put(put(b"more/%05d" % i, os.urandom(VALUE_BYTES)), timeout=10)
    finally:
        c.close()
    set_flag(srv, "--quota-backend-bytes", str(QUOTA))
    srv.restart()
    c = Client(srv)
    try:
        seen.append(("read-only txn over the quota", call(c.kv.Txn, read)))
        seen.append(("alarm raised by it", c.alarms()))
        seen.append(("range over the quota", len(c.kv.Range(rpc_pb2.RangeRequest(key=b"more/00000"), timeout=10).kvs)))
    finally:
        c.close()
    set_flag(srv, "--quota-backend-bytes", str(ROOMY))
    srv.restart()
    c = Client(srv)
    try:
        seen.append(("read-only txn under the alarm", call(c.kv.Txn, read)))
        seen.append(("txn with a put under the alarm", call(c.kv.Txn, txn_with_put_on_failure())))
        seen.append(("put under the alarm", call(c.kv.Put, put(b"p"))))
    finally:
        c.close()
    return seen


def test_read_only_txn_refused_over_the_quota_and_served_under_the_alarm(tmp_path):
    """etcd 3.5 judges every Txn against the quota, so a Txn without puts is
    refused (and the alarm raised) while the database is over it; under a
    larger quota with the alarm still up, it is served, while Txns with puts
    and Puts are not."""
    etcd = etcd_server(str(tmp_path), "--quota-backend-bytes", str(ROOMY)).start()
    try:
        want = read_only_txn_flow(etcd)
    finally:
        etcd.stop()
    brain = brain_server(str(tmp_path), "--quota-backend-bytes", str(ROOMY)).start()
    try:
        got = read_only_txn_flow(brain)
    finally:
        brain.stop()
    assert got[0] == ("read-only txn over the quota", NOSPACE)
    assert got == want


@pytest.mark.parametrize("value", ["-1"])
def test_negative_quota_disables_it(tmp_path, value):
    brain = brain_server(str(tmp_path), "--quota-backend-bytes", value).start()
    c = Client(brain)
    try:
        for i in range(80):  # 1.6 MB: past a small quota, were there one
            c.kv.Put(put(b"k%d" % i, os.urandom(VALUE_BYTES)), timeout=10)
        assert c.alarms() == []
        # an alarm raised by a client still caps writes, as etcd's does
        c.alarms(rpc_pb2.AlarmRequest.ACTIVATE, c.member, rpc_pb2.NOSPACE)
        assert call(c.kv.Put, put(b"p")) == NOSPACE
        c.alarms(rpc_pb2.AlarmRequest.DEACTIVATE, c.member, rpc_pb2.NOSPACE)
        assert call(c.kv.Put, put(b"p")) == ("OK", "")
    finally:
        c.close()
        brain.stop()
