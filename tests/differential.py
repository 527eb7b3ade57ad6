"""Send the same request to real etcd and to brain; compare the answers.

Responses are compared as whole messages after clearing the fields that
legitimately differ between two clusters (cluster_id, member_id, raft_term in
every header, nested ones included). Errors are compared by gRPC code and
message. A mismatch raises with both answers printed in full.
"""
from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc


def normalize(msg: Message) -> Message:
    """A copy with per-cluster identity fields cleared, recursively."""
    out = type(msg)()
    out.CopyFrom(msg)
    _clear(out)
    return out


def _clear(msg: Message) -> None:
    if isinstance(msg, rpc_pb2.ResponseHeader):
        msg.cluster_id = 0
        msg.member_id = 0
        msg.raft_term = 0
        return
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.is_repeated:
            for v in value:
                _clear(v)
        else:
            _clear(value)


@dataclass
class Outcome:
    resp: Message | None = None
    code: grpc.StatusCode | None = None
    details: str | None = None

    def describe(self) -> str:
        if self.resp is not None:
            return text_format.MessageToString(self.resp, as_utf8=False) or "<empty>"
        return f"error {self.code}: {self.details}"


class Mismatch(AssertionError):
    pass


class Pair:
    """One etcd and one brain, with the same stubs on each."""

    def __init__(self, etcd_channel: grpc.Channel, brain_channel: grpc.Channel) -> None:
        self.etcd = rpc_pb2_grpc.KVStub(etcd_channel)
        self.brain = rpc_pb2_grpc.KVStub(brain_channel)
        self.calls = 0

    @staticmethod
    def _call(stub, method: str, req: Message) -> Outcome:
        try:
            return Outcome(resp=getattr(stub, method)(req, timeout=30))
        except grpc.RpcError as e:
            return Outcome(code=e.code(), details=e.details())

    def both(self, method: str, req: Message, context: str = "") -> Outcome:
        self.calls += 1
        a = self._call(self.etcd, method, req)
        b = self._call(self.brain, method, req)
        same = (
            (a.resp is not None and b.resp is not None and normalize(a.resp) == normalize(b.resp))
            or (a.resp is None and b.resp is None and a.code == b.code and a.details == b.details)
        )
        if not same:
            raise Mismatch(
                f"{context}\n{method} request:\n{text_format.MessageToString(req)}\n"
                f"etcd:\n{a.describe()}\nbrain:\n{b.describe()}"
            )
        return a
