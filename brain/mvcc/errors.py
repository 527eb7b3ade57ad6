"""The MVCC layer's errors (etcd's mvcc.ErrCompacted, ErrFutureRev), and
the writer's own failure."""
from __future__ import annotations

from brain.errors import DomainError


class CompactedError(DomainError):
    """The revision asked for has been compacted away."""

    text = "mvcc: required revision has been compacted"


class FutureRevisionError(DomainError):
    """The revision asked for is above the store's."""

    text = "mvcc: required revision is a future revision"


class CorruptError(DomainError):
    """What the store holds contradicts itself (a key index entry without its
    record): the data is damaged, not the request."""

    text = "mvcc: stored data is inconsistent"


class WriteFailedError(DomainError):
    """A bug in the writer failed the batch a request was in. The bug is
    logged once, with its traceback, where it happened; each request of the
    batch gets its own instance of this, carrying the bug's text."""
