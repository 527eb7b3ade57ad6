"""Which keys are attached to which lease, as of the last commit.

Kept from two sources: a scan of the latest index when the server starts,
and the changes of every commit after that (a Put names its lease, or none,
which detaches; a delete detaches). It mirrors the committed state only; the
writer's uncommitted changes are looked at separately when a lease is
revoked (see Lessor._delete_attached).

A commit of many changes (a large DeleteRange, a lease revoked with its many
keys, a migrated revision) is followed a slice per turn of the event loop,
by a task of its own; commits that arrive meanwhile queue behind it. A reader
that needs the committed state awaits `settled()` first.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Iterable, Iterator, Sequence

from brain.mvcc import records as K
from brain.mvcc.kv import Change
from brain.sorting import sorted_in_runs
from engines.base import Snapshot

# Changes (or loaded records) followed per turn of the event loop; a commit
# of at most this many is followed at once.
APPLY_SLICE = 4096


class Attachments:
    __slots__ = ("_lease_of", "_keys_of", "_queued", "_settled", "_applier")

    def __init__(self) -> None:
        self._lease_of: dict[bytes, int] = {}
        self._keys_of: dict[int, set[bytes]] = {}
        self._queued: deque[Sequence[Change]] = deque()
        self._settled: asyncio.Future[None] | None = None  # while commits are followed in slices
        self._applier: asyncio.Task | None = None

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

    def apply(self, changes: Sequence[Change]) -> None:
        """Follow one commit's changes, in order: at once when they are few
        and nothing is queued, else in slices (see settled)."""
        if self._settled is None and len(changes) <= APPLY_SLICE:
            self._apply_slice(changes)
            return
        self._queued.append(changes)
        if self._settled is None:
            loop = asyncio.get_running_loop()
            self._settled = loop.create_future()
            self._applier = loop.create_task(self._apply_queued(), name="lease-attachments-apply")

    def _apply_slice(self, changes: Sequence[Change]) -> None:
        attach = self.attach
        for c in changes:
            if c.deleted:
                if c.prev_lease:
                    attach(c.key, 0)
            elif c.lease or c.prev_lease:
                attach(c.key, c.lease)

    async def _apply_queued(self) -> None:
        queued = self._queued
        try:
            while queued:
                changes = queued[0]
                for i in range(0, len(changes), APPLY_SLICE):
                    if i:
                        await asyncio.sleep(0)
                    self._apply_slice(changes[i : i + APPLY_SLICE])
                queued.popleft()
        except BaseException:
            # stopped half way (the loop is closing): what is queued must not
            # be applied later, after newer commits
            queued.clear()
            raise
        finally:
            settled, self._settled = self._settled, None
            self._applier = None
            if settled is not None:
                settled.set_result(None)

    async def settled(self) -> None:
        """Return once every commit seen so far is followed."""
        while self._settled is not None:
            await asyncio.shield(self._settled)

    @property
    def updating(self) -> bool:
        return self._settled is not None

    async def sorted_keys(self, lease_id: int, more: Iterable[bytes] = ()) -> Iterator[bytes]:
        """The lease's keys as of now, and the keys of more not among them,
        in order: copied at once, sorted in slices (brain/sorting.py)."""
        attached = self._keys_of.get(lease_id, set())
        keys = list(attached)
        keys.extend({k for k in more if k not in attached})
        return await sorted_in_runs(keys)

    def lease_ids(self) -> list[int]:
        return list(self._keys_of)

    def __len__(self) -> int:
        return len(self._lease_of)

    async def load(self, snapshot: Snapshot) -> None:
        """Attach every live key that names a lease, from the engine's
        leased-key records (records.py): only leased keys are read, and
        they are decoded and attached a slice per turn of the event loop."""
        records = await K.read_leased(snapshot)
        decode = K.decode_leased
        for i in range(0, len(records), APPLY_SLICE):
            if i:
                await asyncio.sleep(0)
            for record in records[i : i + APPLY_SLICE]:
                lease, key = decode(record)
                self.attach(key, lease)
