"""The errors of etcd's checks on a request's fields and of its apply rules
(etcd's v3rpc request checks and etcdserver.ErrKeyNotFound,
ErrRequestTooLarge)."""
from __future__ import annotations

from brain.errors import DomainError


class EmptyKeyError(DomainError):
    text = "key is not provided"


class KeyNotFoundError(DomainError):
    """A put with ignore_value or ignore_lease on a key that does not exist."""

    text = "key not found"


class ValueProvidedError(DomainError):
    text = "value is provided"


class LeaseProvidedError(DomainError):
    text = "lease is provided"


class TooManyOpsError(DomainError):
    text = "too many operations in txn request"


class DuplicateKeyError(DomainError):
    text = "duplicate key given in txn request"


class InvalidSortOptionError(DomainError):
    text = "invalid sort option"


class RequestTooLargeError(DomainError):
    text = "request is too large"
