"""The lessor's errors (etcd's lease.ErrLeaseNotFound, ErrLeaseExists,
ErrLeaseTTLTooLarge)."""
from __future__ import annotations

from brain.errors import DomainError


class LeaseNotFoundError(DomainError):
    """No live lease has this id (never granted, revoked or expired)."""

    text = "lease not found"


class LeaseExistsError(DomainError):
    """A grant asked for an id a lease already has."""

    text = "lease already exists"


class LeaseTTLTooLargeError(DomainError):
    """A grant asked for a TTL above the maximum."""

    text = "too large lease TTL"
