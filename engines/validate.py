"""Argument checks shared by the engines, on top of base.check_key/check_range.

Every engine validates a whole request before touching its store, so a bad
argument raises TypeError/ValueError and never leaves half a batch written.
The checks also copy bytearray/memoryview into bytes: an engine must not keep
a reference to a buffer the caller may mutate later.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from engines.base import WriteBatch, check_key, check_range

Op = tuple[bytes, bytes | None]


def check_value(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"engine values must be bytes, not {type(value).__name__}")
    return bytes(value)


def check_keys(keys: object) -> list[bytes]:
    # bytes and str are sequences too, but of ints/chars: reject them as a
    # whole rather than failing on their first element with a puzzling message
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"batch_get takes a sequence of keys, not a single {type(keys).__name__}")
    if not isinstance(keys, Iterable):
        raise TypeError(f"batch_get takes a sequence of keys, not {type(keys).__name__}")
    return [check_key(k) for k in keys]


def check_scan(start: object, end: object, limit: object) -> tuple[bytes, bytes | None, int]:
    """Normalized (start, end, limit) of a scan."""
    # convert first: check_range compares start and end, and memoryviews do
    # not support ordering
    s = check_key(start)
    e = None if end is None else check_key(end)
    check_range(s, e)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"scan limit must be an int, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"scan limit must be >= 0 (0: no limit), not {limit}")
    return s, e, limit


def check_batch(batch: object) -> list[Op]:
    return check_ops(batch_ops(batch))


def batch_ops(batch: object) -> list[Op]:
    """A copy of the batch's ops, not checked yet (check_ops): taken when the
    write is called, so the engine never keeps a list the caller may change."""
    if not isinstance(batch, WriteBatch):
        raise TypeError(f"write takes a WriteBatch, not {type(batch).__name__}")
    return list(batch.ops)


def check_ops(ops: list[Op]) -> list[Op]:
    """ops, or their checked conversions when not all are bytes already."""
    # the usual batch, every key and value already bytes: one pass, no copies
    for k, v in ops:
        if type(k) is not bytes or (v is not None and type(v) is not bytes):
            break
    else:
        return ops
    return [(check_key(k), None if v is None else check_value(v)) for k, v in ops]


def check_expect(expect: object) -> list[Op]:
    # the usual expectations (the writer's: a list or tuple of (bytes,
    # bytes | None) tuples) without the abstract-class checks below, which
    # cost more than the rest of a small commit's checks together
    if type(expect) is list or type(expect) is tuple:
        for pair in expect:
            if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not bytes or (pair[1] is not None and type(pair[1]) is not bytes):
                break
        else:
            return list(expect)
    if isinstance(expect, (bytes, bytearray, memoryview, str)):
        raise TypeError("commit_if expect is a sequence of (key, value | None) pairs")
    out: list[Op] = []
    if not isinstance(expect, Iterable):
        raise TypeError(f"commit_if expect is a sequence of (key, value | None) pairs, not {type(expect).__name__}")
    for pair in expect:
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"commit_if expect entries are (key, value | None) pairs, not {pair!r}")
        k, v = pair
        out.append((check_key(k), None if v is None else check_value(v)))
    return out
