"""Reading tikv-client's errors.

tikv-client raises plain `Exception`s carrying the Rust client's error text
(its `Display`), so the kind of failure is read from that text. Only two
kinds change what the engine does, and both are recognised by names that
come from TiKV's protocol rather than from wording:
- a write conflict: TiKV's `KeyError` with `conflict: Some(WriteConflict {..})`,
  which the client reports from prewrite, before anything can be committed;
- a response over the client's gRPC message limit (tonic's 4 MiB default):
  "message length too large", answered by asking for fewer keys at a time.
A third kind only makes a read wait: a key locked by a transaction still
being settled ("Failed to resolve lock" once the client's own short backoff
is spent). Everything else is a transport, region or PD failure: during a
commit its outcome is unknown, elsewhere the cluster is unavailable.
"""
from __future__ import annotations

import re

from engines.base import EngineError, EngineUnavailableError

WRITE_CONFLICT = "WriteConflict"
RESPONSE_TOO_LARGE = "message length too large"
LOCKED = ("Failed to resolve lock", "locked: Some(")


class ResponseTooLargeError(EngineError):
    """A read asked for more data than one client response may carry."""


class LockedError(EngineUnavailableError):
    """A read met a lock of a transaction not settled yet (it may be one
    whose writer died: TiKV settles it once the lock's time-to-live ends)."""


# the Rust client's internal errors start with the source location that made them
_SOURCE = re.compile(r"^\[[^\]]*\.rs:\d+\]:\s*")


def describe(e: BaseException) -> str:
    text = _SOURCE.sub("", str(e).strip())
    return text if text else type(e).__name__


def is_write_conflict(e: BaseException) -> bool:
    return WRITE_CONFLICT in str(e)


def is_response_too_large(e: BaseException) -> bool:
    return RESPONSE_TOO_LARGE in str(e)


def is_locked(e: BaseException) -> bool:
    text = str(e)
    return any(marker in text for marker in LOCKED)
