"""The errors brain's layers raise for a request they refuse, and the ones
several layers share.

Each layer owns its errors (brain/mvcc/errors.py, brain/lease/errors.py,
brain/apply/errors.py, brain/server/quota.py); the ones here are the
server's as a whole, raised for the same reason by several layers (the
store, the lessor, the cluster), as etcd keeps them in its etcdserver
package. The cluster's are here too: brain/cluster's package imports its
request forwarding, which needs the server's table of statuses. None
carries a gRPC status: the server layer turns them into etcd's statuses in
one table (brain/server/errors_grpc.py).

Every raise makes a new instance: an exception's traceback and context are
set when it is raised, so one instance raised from two tasks would show
each task the other's.
"""
from __future__ import annotations


class DomainError(Exception):
    """An error brain answers a request with, with a status of etcd's.

    `text` is the default message, in etcd's words where etcd has the error."""

    text = ""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.text)


class StoppedError(DomainError):
    """The store or the lessor is closing: nothing more is written."""

    text = "server stopped"


class RequestTimeoutError(DomainError):
    """A write that did not commit: the engine failed or refused it, or could
    not tell whether it applied. (etcd's ErrTimeout: a proposal it could not
    see applied in time.)"""

    text = "request timed out"


class NoLeaderError(DomainError):
    """This process may not write now: it does not hold the leadership of the
    engine it shares, or no leader is known to forward to."""

    text = "no leader"


class DiskFullError(DomainError):
    """The engine's disk is full. etcd stops when its disk fills; brain
    refuses the write and goes on (the write can be retried once space is
    freed)."""

    text = "no space left on device"


class NotLeaderError(DomainError):
    """Asked of the leader only, on a member that does not lead."""

    text = "not leader"


class BadLeaderTransfereeError(DomainError):
    """MoveLeader to a member that is not live."""

    text = "bad leader transferee"


class LeaderTransferTimeoutError(DomainError):
    text = "request timed out, leader transfer took too long"


class MembershipFixedError(DomainError):
    """Members come and go with their processes (brain scales through its
    engine, not raft membership): MemberAdd and its kin are refused."""

    text = "membership changes are not supported by brain"


class NotSupportedForLearnerError(DomainError):
    """etcd's answer from a learner, a member still catching up with the
    leader's log; brain's, for the same reason, from a migration's target
    before its cut-over (brain/server/migration.py): every client write,
    compaction and lease request is refused until then."""

    text = "rpc not supported for learner"
