"""The lessor: grants, renews, revokes and expires leases.

State lives in three places, each for a reason:
- `_leases` (memory): the live leases. The MVCC writer consults it, through
  store.lease_exists, when it applies a Put naming a lease; a revoke removes
  a lease from it inside a write function, i.e. in the writer too. So the
  two are ordered: a Put applied before the revoke is in the writer's state
  when the revoke collects the keys to delete, and a Put applied after it is
  refused. No key can stay attached to a dead lease.
- `l<id>` records (engine): which leases exist across a restart.
- `Attachments` (memory): keys per lease, from a startup scan plus every
  commit's changes.

A revoke deletes the lease's record first, then its keys in one revision.
The record's deletion is the commit point: should the server stop between
the two, the next start finds keys naming a lease without a record and
deletes them then (`_sweep`), so a revoke is never half done for good, and
a revoked lease never comes back.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Callable, Sequence

from brain.tasks import cancel_and_wait
from brain.errors import DiskFullError, NoLeaderError, RequestTimeoutError, StoppedError
from brain.lease.errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError
from brain.etcdpb import kv_pb2
from brain.lease import record
from brain.lease.attachments import Attachments
from brain.lease.expiry import ExpiryQueue
from brain.lease.lease import MAX_TTL, MIN_TTL, Lease
from brain.mvcc import records as K
from brain.mvcc.kv import Change, FollowingKV, TxnWrite
from brain.sorting import take_all
from engines.base import ConflictError, EngineError, EngineFullError, WriteBatch

log = logging.getLogger(__name__)

_parse_kv = kv_pb2.KeyValue.FromString

# etcd retries the revocation of an expired lease after this long when the
# first attempt has not gone through (expiredLeaseRetryInterval).
RETRY_INTERVAL = 3.0
# Expired leases revoked per round of the expiry task; etcd revokes at most
# 1000 per second, so a pile of expiries cannot monopolise the writer.
REVOKE_PER_ROUND = 500
# Keys of a revoked lease deleted per turn of the event loop (each is a read
# and a delete, so fewer than a plain DeleteRange's YIELD_EVERY).
DELETES_PER_TURN = 256


class Lessor:
    def __init__(
        self,
        store: FollowingKV,
        *,
        min_ttl: int = MIN_TTL,
        clock: Callable[[], float] = time.monotonic,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.store = store
        self.engine = store.engine
        self.min_ttl = min_ttl
        self.clock = clock
        self.retry_interval = retry_interval
        self._leases: dict[int, Lease] = {}
        self._attached = Attachments()
        self._queue = ExpiryQueue()
        # ids a grant or revoke is writing right now: a grant of the same id
        # must not interleave with them
        self._busy: set[int] = set()
        # leases whose record is gone but whose keys could not be deleted yet
        self._orphans: set[int] = set()
        self._expiring: set[int] = set()  # expired leases being revoked
        self._wake = asyncio.Event()
        self._target: float | None = None  # when the expiry task wakes next
        self._task: asyncio.Task | None = None
        self._loading: list[tuple[Sequence[Change], int]] | None = None
        self._closed = False
        # figures for metrics and logs
        self.granted = 0
        self.revoked = 0
        self.expired = 0

    # -- start and stop ------------------------------------------------------

    @classmethod
    async def open(cls, store: FollowingKV, **kwargs) -> Lessor:
        """Load the stored leases (each with its full TTL again), attach the
        live keys, finish revokes a crash interrupted, start expiring."""
        lessor = cls(store, **kwargs)
        await lessor._recover()
        lessor._task = asyncio.get_running_loop().create_task(lessor._run(), name="lease-expiry")
        return lessor

    async def _recover(self) -> None:
        store = self.store
        view = store.view
        now = self.clock()
        # records are read from the engine itself: they are written beside
        # the store's commits, so its view need not hold the latest
        for lease_id, ttl in (await record.load_all(self.engine)).items():
            ttl = max(ttl, self.min_ttl)
            self._add(Lease(lease_id, ttl, now + ttl))
        # commits during the scan are replayed after it, so the scan's older
        # state never overwrites them
        self._loading = []
        store.add_listener(self._on_commit)
        await self._attached.load(view.snapshot)
        loaded, self._loading = self._loading, None
        for changes, rev in loaded:
            if rev > view.rev:
                self._attached.apply(changes)
        await self._attached.settled()
        orphans = [i for i in self._attached.lease_ids() if i not in self._leases]
        for lease_id in orphans:
            log.warning("keys attached to lease %x, which has no record: finishing its revoke", lease_id)
            self._orphans.add(lease_id)
            try:
                await self._sweep(lease_id)
            except Exception as e:
                log.error("cannot delete the keys of revoked lease %x yet: %s", lease_id, e)
                self._queue.push(lease_id, self.clock() + self.retry_interval)
        log.info("%d leases loaded, %d keys attached", len(self._leases), len(self._attached))

    async def stop(self) -> None:
        """Stop expiring; release keep-alives waiting on an expiry."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._task)
        await self._attached.settled()  # a large commit being followed: a few turns more
        for lease in self._leases.values():
            lease.revoked.set()

    def detach(self) -> None:
        """Stop following the store's commits: a stopped lessor that another
        one replaces (a member that stopped leading, brain/cluster)."""
        self.store.remove_listener(self._on_commit)

    # -- lookups ---------------------------------------------------------------

    def exists(self, lease_id: int) -> bool:
        """store.lease_exists: called by the writer for a Put naming a lease.
        An expired lease whose revoke has not run yet still counts, as in etcd."""
        return lease_id in self._leases

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    async def keys(self, lease_id: int) -> list[bytes]:
        """The committed keys attached to the lease, sorted (a slice per
        turn of the loop, see sorting.py)."""
        await self._attached.settled()
        return await take_all(await self._attached.sorted_keys(lease_id))

    def remaining(self, lease: Lease) -> int:
        # etcd's int64(Remaining().Seconds()): whole seconds, toward zero
        return int(lease.remaining(self.clock()))

    def leases(self) -> list[Lease]:
        """Every live lease, soonest expiry first (etcd's order)."""
        return sorted(self._leases.values(), key=lambda lease: lease.expiry)

    def gauges(self) -> list[tuple[str, str, float]]:
        return [
            ("brain_lease_active", "Leases currently granted.", len(self._leases)),
            ("brain_lease_attached_keys", "Keys attached to a lease.", len(self._attached)),
            ("brain_lease_granted", "Leases granted since start.", self.granted),
            ("brain_lease_revoked", "Leases revoked by clients since start.", self.revoked),
            ("brain_lease_expired", "Leases expired since start.", self.expired),
        ]

    # -- grant and renew ------------------------------------------------------

    def _new_id(self) -> int:
        # etcd hands out positive int64 ids; random ones never repeat in practice
        while True:
            lease_id = secrets.randbits(63)
            if lease_id and not self._taken(lease_id):
                return lease_id

    def _taken(self, lease_id: int) -> bool:
        return lease_id in self._leases or lease_id in self._busy or lease_id in self._orphans

    async def grant(self, lease_id: int, ttl: int) -> Lease:
        """etcd's LeaseGrant: id 0 picks one; too large a TTL and an id in use
        are refused; a short TTL is raised to the minimum. The lease counts
        down from the moment its record is durable."""
        if self._closed:
            raise StoppedError()
        if lease_id == 0:
            lease_id = self._new_id()
        if ttl > MAX_TTL:
            raise LeaseTTLTooLargeError()
        if self._taken(lease_id):
            raise LeaseExistsError()
        ttl = max(ttl, self.min_ttl)
        self._busy.add(lease_id)
        # shielded: a client giving up must not leave a stored record that
        # memory does not know of
        return await asyncio.shield(self._grant(lease_id, ttl))

    async def _grant(self, lease_id: int, ttl: int) -> Lease:
        try:
            await self._write_record(lease_id, ttl)
        finally:
            self._busy.discard(lease_id)
        lease = Lease(lease_id, ttl, self.clock() + ttl)
        self._add(lease)
        self.granted += 1
        return lease

    def _add(self, lease: Lease) -> None:
        self._leases[lease.id] = lease
        self._schedule(lease.id, lease.expiry)

    async def renew(self, lease_id: int) -> int:
        """etcd's Renew: the granted TTL starts over. A lease past its expiry
        is being revoked: wait for that and report it gone."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        now = self.clock()
        if lease.expired(now):
            await lease.revoked.wait()
            if self._closed and lease_id in self._leases:
                raise StoppedError()
            raise LeaseNotFoundError()
        lease.expiry = now + lease.ttl
        self._schedule(lease_id, lease.expiry)
        return lease.ttl

    # -- revoke ---------------------------------------------------------------

    async def revoke(self, lease_id: int) -> int:
        """etcd's LeaseRevoke; returns the store revision after it (a new one
        when keys were attached, the current one otherwise)."""
        if self._closed:
            raise StoppedError()
        if lease_id not in self._leases:
            raise LeaseNotFoundError()
        # shielded: once queued, the revoke happens whether or not the client
        # still waits, and its bookkeeping must follow it
        rev = await asyncio.shield(self._revoke(lease_id))
        self.revoked += 1
        return rev

    async def _revoke(self, lease_id: int) -> int:
        gone: Lease | None = None  # set once the lease's record is deleted

        async def revoke_in_writer(txn: TxnWrite) -> int:
            nonlocal gone
            # the decision is made here, in the writer, so that it is ordered
            # with every Put's lease check (see the module docstring)
            lease = self._leases.pop(lease_id, None)
            if lease is None:
                raise LeaseNotFoundError()
            self._busy.add(lease_id)
            try:
                await self._write_record(lease_id, None)
            except BaseException:
                self._leases[lease_id] = lease  # nothing happened: still alive
                self._busy.discard(lease_id)
                raise
            gone = lease
            await self._delete_attached(txn, lease_id)
            return txn.rev()

        try:
            return await self.store.write(revoke_in_writer)
        except BaseException:
            if gone is not None:
                # the lease is gone for good; its keys are deleted later
                log.error("lease %x revoked but its keys not yet deleted; retrying", lease_id)
                self._orphans.add(lease_id)
                self._schedule(lease_id, self.clock() + self.retry_interval)
            raise
        finally:
            if gone is not None:
                self._busy.discard(lease_id)
                gone.revoked.set()

    async def _sweep(self, lease_id: int) -> int:
        """Delete the keys still attached to a lease whose record is gone."""

        async def sweep_in_writer(txn: TxnWrite) -> int:
            if lease_id in self._leases:  # granted anew meanwhile: its keys now
                return txn.rev()
            await self._delete_attached(txn, lease_id)
            return txn.rev()

        rev = await self.store.write(sweep_in_writer)
        self._orphans.discard(lease_id)
        return rev

    async def _delete_attached(self, txn: TxnWrite, lease_id: int) -> None:
        """Delete, in this txn (one revision), every key that names the lease
        in the writer's current state: the committed attachments, plus keys
        that batches not yet committed (or this one) attached."""
        await self._attached.settled()  # a large commit is followed in slices
        uncommitted = [c.key for c in txn.uncommitted_changes() if c.lease == lease_id and not c.deleted]
        candidates = await self._attached.sorted_keys(lease_id, uncommitted)
        for i, key in enumerate(candidates):  # etcd deletes in key order
            if i % DELETES_PER_TURN == DELETES_PER_TURN - 1:
                await asyncio.sleep(0)  # a lease with many keys lets reads run
            raw = await txn.get(key)
            if raw is not None:
                kv = _parse_kv(raw)
                if kv.lease == lease_id:
                    txn.delete_live(raw, kv)

    # -- persistence ---------------------------------------------------------------

    async def _write_record(self, lease_id: int, ttl: int | None) -> None:
        wb = WriteBatch()
        if ttl is None:
            wb.delete(K.lease_key(lease_id))
        else:
            wb.put(K.lease_key(lease_id), record.encode(ttl))
        fence = self.store.fence
        try:
            if fence is None:
                await self.engine.write(wb, sync=self.store.sync)
            else:
                # a leader among several processes (brain/cluster): a
                # deposed one must not grant or revoke either
                if not fence.admits_writes():
                    raise NoLeaderError()
                async with self.store.fence_lock:  # see FollowingKV.fence_lock
                    await self.engine.commit_if(fence.expectations(), wb, sync=self.store.sync)
        except ConflictError:
            log.error("lease record write refused: this process no longer leads")
            raise NoLeaderError() from None
        except EngineError as e:
            log.error("lease record write failed: %s", e)
            raise (DiskFullError() if isinstance(e, EngineFullError) else RequestTimeoutError()) from None

    def _on_commit(self, changes: Sequence[Change], rev: int) -> None:
        if self._loading is not None:
            self._loading.append((changes, rev))
            return
        self._attached.apply(changes)

    # -- expiry ---------------------------------------------------------------

    def _schedule(self, lease_id: int, deadline: float) -> None:
        self._queue.push(lease_id, deadline)
        self._compact_queue()
        if self._target is None or deadline < self._target:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._expire_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # the expiry task must outlive any one failure
                log.exception("lease expiry round failed")
            now = self.clock()
            self._wake.clear()
            self._target = self._queue.next_deadline()
            if self._target is not None and self._target <= now:
                await asyncio.sleep(0)
                continue
            timeout = None if self._target is None else self._target - now
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _expire_due(self) -> None:
        now = self.clock()
        expired: list[int] = []
        sweeps: list[int] = []
        for lease_id in self._queue.pop_due(now, REVOKE_PER_ROUND):
            if lease_id in self._orphans:
                sweeps.append(lease_id)
                continue
            lease = self._leases.get(lease_id)
            if lease is None or not lease.expired(now) or lease_id in self._expiring:
                continue  # gone, renewed since, or already being revoked
            # look again later should this revoke not go through (etcd does too)
            self._queue.push(lease_id, now + self.retry_interval)
            self._expiring.add(lease_id)
            expired.append(lease_id)
        if not expired and not sweeps:
            return
        results = await asyncio.gather(
            *(self._expire_one(i) for i in expired),
            *(self._sweep(i) for i in sweeps),
            return_exceptions=True,
        )
        for lease_id, result in zip(expired + sweeps, results):
            if isinstance(result, BaseException) and not isinstance(result, LeaseNotFoundError):
                # an expired lease already has its retry entry; a sweep gets one
                log.warning("revoking lease %x failed (%s); retrying in %.0f s", lease_id, result, self.retry_interval)
                if lease_id in sweeps:
                    self._queue.push(lease_id, self.clock() + self.retry_interval)

    async def _expire_one(self, lease_id: int) -> None:
        try:
            await asyncio.shield(self._revoke(lease_id))
            self.expired += 1
        finally:
            self._expiring.discard(lease_id)

    def _compact_queue(self) -> None:
        live = len(self._leases) + len(self._orphans)
        if len(self._queue) <= 2 * live + 64:
            return
        entries = [(lease.expiry, lease.id) for lease in self._leases.values()]
        now = self.clock()
        # expiring leases keep their retry entry, orphans theirs
        entries += [(now + self.retry_interval, i) for i in self._expiring | self._orphans]
        self._queue.rebuild(entries)
