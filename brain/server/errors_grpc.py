"""The one table from brain's errors to etcd's gRPC statuses (etcd's
toGRPCErrorMap, server/etcdserver/api/v3rpc/util.go), and what every other
exception and every request that does not parse is answered with.

The layers below raise their own errors (brain/errors.py and the errors
modules of mvcc, lease and apply), which carry no status; the handlers of
every call shape, on both transports, turn them into statuses here
(brain/server/status.py), as does the forwarding of calls to the leader
(brain/cluster/forward.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NoReturn

import grpc

from brain.apply.errors import (
    DuplicateKeyError, EmptyKeyError, InvalidSortOptionError, KeyNotFoundError, LeaseProvidedError,
    RequestTooLargeError, TooManyOpsError, ValueProvidedError,
)
from brain.errors import (
    BadLeaderTransfereeError, DiskFullError, LeaderTransferTimeoutError, MembershipFixedError, NoLeaderError,
    NotLeaderError, NotSupportedForLearnerError, RequestTimeoutError, StoppedError,
)
from brain.lease.errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError
from brain.migrate.importer import MigrationRefusedError
from brain.mvcc.errors import CompactedError, CorruptError, FutureRevisionError, WriteFailedError
from brain.server.quota import NoSpaceError

log = logging.getLogger(__name__)

Code = grpc.StatusCode


@dataclass(frozen=True, slots=True)
class Status:
    code: grpc.StatusCode
    message: str | None  # None: the error's own text


_IA = Code.INVALID_ARGUMENT

STATUS_OF: dict[type[BaseException], Status] = {
    EmptyKeyError: Status(_IA, "etcdserver: key is not provided"),
    KeyNotFoundError: Status(_IA, "etcdserver: key not found"),
    ValueProvidedError: Status(_IA, "etcdserver: value is provided"),
    LeaseProvidedError: Status(_IA, "etcdserver: lease is provided"),
    TooManyOpsError: Status(_IA, "etcdserver: too many operations in txn request"),
    DuplicateKeyError: Status(_IA, "etcdserver: duplicate key given in txn request"),
    InvalidSortOptionError: Status(_IA, "etcdserver: invalid sort option"),
    RequestTooLargeError: Status(_IA, "etcdserver: request is too large"),
    CompactedError: Status(Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
    FutureRevisionError: Status(Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
    CorruptError: Status(Code.DATA_LOSS, "etcdserver: corrupt cluster"),
    NoSpaceError: Status(Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
    DiskFullError: Status(Code.RESOURCE_EXHAUSTED, "etcdserver: no space left on device"),
    LeaseNotFoundError: Status(Code.NOT_FOUND, "etcdserver: requested lease not found"),
    LeaseExistsError: Status(Code.FAILED_PRECONDITION, "etcdserver: lease already exists"),
    LeaseTTLTooLargeError: Status(Code.OUT_OF_RANGE, "etcdserver: too large lease TTL"),
    StoppedError: Status(Code.UNAVAILABLE, "etcdserver: server stopped"),
    RequestTimeoutError: Status(Code.UNAVAILABLE, "etcdserver: request timed out"),
    NoLeaderError: Status(Code.UNAVAILABLE, "etcdserver: no leader"),
    NotLeaderError: Status(Code.FAILED_PRECONDITION, "etcdserver: not leader"),
    BadLeaderTransfereeError: Status(Code.FAILED_PRECONDITION, "etcdserver: bad leader transferee"),
    LeaderTransferTimeoutError: Status(Code.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long"),
    MembershipFixedError: Status(Code.FAILED_PRECONDITION, "etcdserver: membership changes are not supported by brain"),
    # UNAVAILABLE: a client with other endpoints tries them, and retries later
    NotSupportedForLearnerError: Status(Code.UNAVAILABLE, "etcdserver: rpc not supported for learner"),
    MigrationRefusedError: Status(Code.FAILED_PRECONDITION, None),  # brain's own, with why
    # a bug in the writer, logged there: answered as any unexpected error
    WriteFailedError: Status(Code.UNKNOWN, None),
}

# What grpc-go answers a request message that does not parse, before the
# handler runs (a unary call's request) or when the handler reads it (a
# streaming call's), followed by the protobuf library's reason.
UNPARSABLE_REQUEST = "grpc: error unmarshalling request: "
UNPARSABLE_STREAM_MESSAGE = "grpc: failed to unmarshal the received message "


class UnparsableRequest(Exception):
    """A request message of a streaming call that is not a protobuf message
    of the call's request type."""


def status_of(e: BaseException) -> Status | None:
    """etcd's status for one of brain's errors; None for any other exception."""
    for cls in type(e).__mro__:
        status = STATUS_OF.get(cls)
        if status is not None:
            return status
    return None


def answer(e: Exception, where: str) -> tuple[grpc.StatusCode, str]:
    """The status a call that raised e ends with.

    An exception that is none of brain's errors is a bug: it is logged here,
    once, with its traceback, and answered as etcd answers an error its
    table does not hold (togRPCError): UNKNOWN, with the error's text. A
    request that does not parse is the client's fault, not a bug: INTERNAL
    as from grpc-go, logged at debug level only, so that a client sending
    garbage cannot fill the log."""
    status = status_of(e)
    if status is not None:
        return status.code, status.message if status.message is not None else str(e)
    if isinstance(e, UnparsableRequest):
        log.debug("%s: a request message did not parse: %s", where, e)
        return Code.INTERNAL, UNPARSABLE_STREAM_MESSAGE + str(e)
    log.exception("unexpected error in %s", where)
    return Code.UNKNOWN, str(e) or type(e).__name__


async def abort(context, e: Exception, where: str) -> NoReturn:
    """End the call with e's status (see answer)."""
    code, message = answer(e, where)
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises
