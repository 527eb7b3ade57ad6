"""Request checks done before anything is read or written, as etcd's v3rpc
layer does them (same order, same errors)."""
from __future__ import annotations

from brain.apply.errors import DuplicateKeyError, EmptyKeyError, InvalidSortOptionError, KeyNotFoundError, LeaseProvidedError, TooManyOpsError, ValueProvidedError
from brain.etcdpb import rpc_pb2

_SORT_ORDERS = frozenset(rpc_pb2.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise EmptyKeyError()
    if r.sort_order not in _SORT_ORDERS or r.sort_target not in _SORT_TARGETS:
        raise InvalidSortOptionError()


def check_put(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise EmptyKeyError()
    if r.ignore_value and r.value:
        raise ValueProvidedError()
    if r.ignore_lease and r.lease != 0:
        raise LeaseProvidedError()


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise EmptyKeyError()


def check_txn(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise TooManyOpsError()
    for c in r.compare:
        if not c.key:
            raise EmptyKeyError()
    for op in r.success:
        _check_op(op, max_txn_ops - opc)
    for op in r.failure:
        _check_op(op, max_txn_ops - opc)


def _check_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete(op.request_delete_range)
    elif which == "request_txn":
        check_txn(op.request_txn, max_txn_ops)
    else:
        raise KeyNotFoundError()


# -- etcd's duplicate-key rule ------------------------------------------------
# Within one branch of a txn (nested txns included) a key may be put at most
# once, and never both put and deleted; the then/else branches of a nested txn
# may each put the same key. Deletes may overlap each other.


class _Intervals:
    """A set of half-open byte-string intervals; a point is [k, k+\\0)."""

    __slots__ = ("ivs",)

    def __init__(self) -> None:
        self.ivs: list[tuple[bytes, bytes | None]] = []  # end None: to infinity

    def add(self, begin: bytes, end: bytes | None) -> None:
        self.ivs.append((begin, end))

    def union(self, other: _Intervals) -> None:
        self.ivs.extend(other.ivs)

    def contains(self, k: bytes) -> bool:
        for b, e in self.ivs:
            if b <= k and (e is None or k < e):
                return True
        return False


def _delete_interval(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    if not range_end:
        return key, key + b"\x00"
    # etcd compares range ends as plain strings here: "\0" is not widened to
    # infinity, so such an interval is empty unless key is "" (never valid).
    return key, range_end


def check_intervals(reqs) -> tuple[set[bytes], _Intervals]:
    dels = _Intervals()
    for req in reqs:
        if req.WhichOneof("request") == "request_delete_range":
            d = req.request_delete_range
            dels.add(*_delete_interval(d.key, d.range_end))
    puts: set[bytes] = set()
    for req in reqs:
        if req.WhichOneof("request") != "request_txn":
            continue
        t = req.request_txn
        puts_then, dels_then = check_intervals(t.success)
        puts_else, dels_else = check_intervals(t.failure)
        for k in puts_then:
            if k in puts or dels.contains(k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if k in puts and k not in puts_then:
                raise DuplicateKeyError()
            if dels.contains(k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.union(dels_then)
        dels.union(dels_else)
    for req in reqs:
        if req.WhichOneof("request") != "request_put":
            continue
        k = req.request_put.key
        if k in puts or dels.contains(k):
            raise DuplicateKeyError()
        puts.add(k)
    return puts, dels
