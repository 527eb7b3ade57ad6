"""etcd's errors, as exceptions.

Clients (kube-apiserver's etcd client above all) recognise errors by their
exact gRPC code and message text, so every error brain returns is one of
these, raised anywhere below the gRPC layer and turned into a status in one
place (brain/server/status.py).
"""
from __future__ import annotations

import grpc


class EtcdError(Exception):
    """An error with etcd's gRPC status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # keep picklable for the benchmark's worker processes
        return (EtcdError, (self.code, self.message))


def _e(code: grpc.StatusCode, message: str) -> EtcdError:
    return EtcdError(code, message)


_IA = grpc.StatusCode.INVALID_ARGUMENT

ErrEmptyKey = _e(_IA, "etcdserver: key is not provided")
ErrKeyNotFound = _e(_IA, "etcdserver: key not found")
ErrValueProvided = _e(_IA, "etcdserver: value is provided")
ErrLeaseProvided = _e(_IA, "etcdserver: lease is provided")
ErrTooManyOps = _e(_IA, "etcdserver: too many operations in txn request")
ErrDuplicateKey = _e(_IA, "etcdserver: duplicate key given in txn request")
ErrInvalidSortOption = _e(_IA, "etcdserver: invalid sort option")
ErrRequestTooLarge = _e(_IA, "etcdserver: request is too large")
ErrCompacted = _e(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
ErrFutureRev = _e(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
ErrNoSpace = _e(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
# brain's own: etcd stops when its disk fills, brain refuses the write and
# goes on (the write can be retried once space is freed)
ErrDiskFull = _e(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: no space left on device")
ErrTooManyRequests = _e(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
ErrLeaseNotFound = _e(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
ErrLeaseExist = _e(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
ErrLeaseTTLTooLarge = _e(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
ErrNoLeader = _e(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
ErrNotLeader = _e(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
ErrBadLeaderTransferee = _e(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
ErrTimeoutLeaderTransfer = _e(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long")
ErrStopped = _e(grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")
ErrTimeout = _e(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")
ErrCorrupt = _e(grpc.StatusCode.DATA_LOSS, "etcdserver: corrupt cluster")
ErrAuthNotEnabled = _e(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
ErrMemberNotFound = _e(grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
ErrNotCapable = _e(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not capable")
# etcd's answer from a learner, a member still catching up with the leader's
# log; brain's answer, for the same reason, from a migration's target before
# its cut-over (brain/server/migration.py). UNAVAILABLE: a client with other
# endpoints tries them, and retries later.
ErrNotSupportedForLearner = _e(grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")
