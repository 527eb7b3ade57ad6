"""Which keys are attached to which lease, as of the last commit.

Kept from two sources: a scan of the latest index when the server starts,
and the changes of every commit after that (a Put names its lease, or none,
which detaches; a delete detaches). It mirrors the committed state only; the
writer's uncommitted changes are looked at separately when a lease is
revoked (see Lessor._delete_attached).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from brain.mvcc import records as K
from brain.mvcc.kv import Change
from engines.base import Snapshot



class Attachments:
    __slots__ = ("_lease_of", "_keys_of")

    def __init__(self) -> None:
        self._lease_of: dict[bytes, int] = {}
        self._keys_of: dict[int, set[bytes]] = {}

    def attach(self, key: bytes, lease_id: int) -> None:
        old = self._lease_of.get(key, 0)
        if old == lease_id:
            return
        if old:
            self._remove(key, old)
        if lease_id:
            self._lease_of[key] = lease_id
            self._keys_of.setdefault(lease_id, set()).add(key)

    def _remove(self, key: bytes, lease_id: int) -> None:
        del self._lease_of[key]
        keys = self._keys_of.get(lease_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[lease_id]

    def apply(self, changes: Iterable[Change]) -> None:
        """Follow one commit's changes, in order."""
        for c in changes:
            if c.deleted:
                if c.prev_lease:
                    self.attach(c.key, 0)
            elif c.lease or c.prev_lease:
                self.attach(c.key, c.lease)

    def keys_of(self, lease_id: int) -> Sequence[bytes]:
        return sorted(self._keys_of.get(lease_id, ()))

    def lease_ids(self) -> list[int]:
        return list(self._keys_of)

    def __len__(self) -> int:
        return len(self._lease_of)

    async def load(self, snapshot: Snapshot) -> None:
        """Attach every live key that names a lease, from the engine's
        leased-key records (records.py): only leased keys are read."""
        for lease, key in await K.read_leased(snapshot):
            self.attach(key, lease)
