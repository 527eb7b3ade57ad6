"""One member of a brain cluster over a shared engine (TiKV): the roles.

Every member serves reads and watches from its own store, which follows the
engine (follower.py). One member, elected through the engine (election.py),
commits; the others forward the calls that write to it (forward.py). The
member list comes from heartbeat records (members.py).

Becoming the leader: the election wins a term; the store then catches up
with the engine at a fresh timestamp (which waits out, through TiKV's lock
resolution, a commit the old leader left half done, so the revision record
is settled), commits are let through under the new term's fence, the
lessor loads the leases (each with its full TTL again, as etcd's new leader
does), and only then are calls served here rather than forwarded. Losing
the leadership undoes it in reverse: no more commits, the lessor stops, and
the store follows the engine again.

A leader answers a linearizable read from its own view only while its lease
holds: it cannot have missed a commit then, as nobody else could commit.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit
from typing import TYPE_CHECKING

import grpc

from brain.tasks import cancel_and_wait
from brain.errors import BadLeaderTransfereeError, LeaderTransferTimeoutError, NoLeaderError, NotLeaderError, RequestTimeoutError
from brain.cluster.election import DEFAULT_LEASE_SECONDS, DEFAULT_RENEW_INTERVAL, Election
from brain.cluster.follower import DEFAULT_POLL_INTERVAL, EngineFollower
from brain.cluster.forward import Forwarder
from brain.cluster.members import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MEMBER_TTL, MemberRecord, MemberRegistry
from brain.lease import Lessor
from brain.mvcc.kv import FollowingKV
from brain.server.config import TLSConfig
from engines.base import ConflictError, Engine, EngineError

if TYPE_CHECKING:
    from brain.server.lease import LeaseService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSettings:
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    renew_interval: float = DEFAULT_RENEW_INTERVAL
    poll_interval: float = DEFAULT_POLL_INTERVAL
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    member_ttl: float = DEFAULT_MEMBER_TTL

    @property
    def failover_bound(self) -> float:
        """The longest a follower takes to notice a dead leader's lease ran
        out: the lease counted from its last sight of a renewal, which is
        at most a renewal interval old."""
        return self.lease_seconds + self.renew_interval

    @property
    def forward_wait(self) -> float:
        """How long a call on a member that knows no leader waits for one:
        a failover, and time to take up the duties."""
        return self.failover_bound + 5.0


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials | None:
    """The client side of the members' TLS settings, for forwarding to https URLs."""
    if not tls.cert_file:
        return None

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(tls.trusted_ca_file), read(tls.key_file), read(tls.cert_file))


class ClusterNode:
    def __init__(
        self,
        engine: Engine,
        store: FollowingKV,
        lease_service: LeaseService,
        me: MemberRecord,
        settings: ClusterSettings = ClusterSettings(),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.lease_service = lease_service
        self.me = me
        self.settings = settings
        url = me.client_urls[0] if me.client_urls else ""
        self.election = Election(engine, me.id, url, lease_seconds=settings.lease_seconds, renew_interval=settings.renew_interval)
        self.follower = EngineFollower(store, engine, settings.poll_interval)
        self.members = MemberRegistry(engine, me, heartbeat_interval=settings.heartbeat_interval, member_ttl=settings.member_ttl)
        self.forwarder = Forwarder(self, settings.forward_wait, credentials)
        self.lessor: Lessor | None = None
        self._writable = False  # commits let through (the store's fence)
        self._serving = False  # calls served here rather than forwarded
        self._routing = asyncio.Event()  # set, and replaced, when routing changes
        self._reconciler: asyncio.Task | None = None

    # -- MVCCStore.fence -------------------------------------------------------

    def admits_writes(self) -> bool:
        return self._writable and self.election.lease_valid()

    def expectations(self) -> list[tuple[bytes, bytes | None]]:
        return self.election.expectations()

    # -- forward.Router ----------------------------------------------------------

    def serves_locally(self) -> bool:
        return self._serving

    def leader_url(self) -> str | None:
        rec = self.election.leader
        if rec is None or rec.member_id == self.me.id or self.election.is_leader:
            return None
        return rec.client_url

    async def leader_changed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._routing.wait(), timeout)
        except TimeoutError:
            pass

    def _notify(self) -> None:
        old, self._routing = self._routing, asyncio.Event()
        old.set()

    # -- Status and MemberList -------------------------------------------------

    @property
    def leader_id(self) -> int:
        return self.election.leader_id

    @property
    def term(self) -> int:
        rec = self.election.leader
        return rec.term if rec is not None else 0

    def gauges(self) -> list[tuple[str, str, float]]:
        f = self.follower
        return [
            ("brain_cluster_catch_up_revisions", "Revisions this member's store took over from the engine's revision log.",
             f.caught_up_revisions),
            ("brain_cluster_catch_up_chunks", "Chunks those revisions were published in (a long gap takes several).",
             f.caught_up_chunks),
            ("brain_cluster_catch_up_largest_chunk", "Revisions in the largest of those chunks.", f.largest_chunk),
            ("brain_cluster_forwarded_calls", "Calls this member forwarded to the leader.", self.forwarder.forwarded),
        ]

    async def live_members(self) -> list[MemberRecord]:
        return await self.members.live()

    async def move_leader(self, target: int) -> None:
        """etcd's MoveLeader, on the leader: hand the lease to target and
        return once it leads."""
        if not self._serving:
            raise NotLeaderError()
        if target == self.me.id:
            return
        if target not in {m.id for m in await self.members.live()}:
            raise BadLeaderTransfereeError()
        for _ in range(3):  # a renewal may change the record first
            try:
                await self.election.hand_over(target)
                break
            except ConflictError:
                await asyncio.sleep(0.05)
        else:
            raise LeaderTransferTimeoutError()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.forward_wait
        while self.election.leader_id != target:
            left = deadline - loop.time()
            if left <= 0:
                raise LeaderTransferTimeoutError()
            await self.leader_changed(min(left, 0.1))

    # -- reads -----------------------------------------------------------------

    async def read_barrier(self) -> None:
        """Before a linearizable read: the store holds every revision
        committed before the call."""
        if self._serving:
            if self.election.lease_valid():
                return
            raise NoLeaderError()  # maybe deposed without knowing it yet
        try:
            await self.follower.sync()
        except EngineError as e:
            log.warning("linearizable read refused: cannot read the revision from the engine (%s)", e)
            raise RequestTimeoutError() from None

    # -- life ------------------------------------------------------------------

    async def start(self) -> None:
        url = self.election.client_url
        host = urlsplit(url).hostname or ""
        if host in ("0.0.0.0", "::"):
            log.warning("this member's client URL %s is no address to connect to: members forward writes to "
                        "the leader's URL, so set --advertise-client-urls", url)
        self.store.fence = self
        self.store.resync = self.follower.catch_up
        self.store.lease_exists = lambda _id: False
        self.follower.start(lambda: not self._writable)
        await self.members.beat()  # listed from the start
        self.members.start()
        self._reconciler = asyncio.get_running_loop().create_task(self._reconcile(), name="cluster-roles")
        self.election.start()

    async def _reconcile(self) -> None:
        election = self.election
        while True:
            await election.changed.wait()
            election.changed.clear()
            self._notify()
            try:
                if election.is_leader and not self._writable:
                    await self._promote(election.term)
                elif not election.is_leader and self._writable:
                    await self._demote()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("changing this member's role failed")
            self._notify()

    async def _promote(self, term: int) -> None:
        election = self.election

        def still_leader() -> bool:
            return election.is_leader and election.term == term

        while still_leader():
            try:
                rev = await self.follower.catch_up()
                break
            except EngineError as e:
                log.warning("taking up the leadership: cannot catch up with the engine yet (%s)", e)
                await asyncio.sleep(0.2)
        if not still_leader():
            return
        self._writable = True
        while still_leader():
            try:
                lessor = await Lessor.open(self.store)
                break
            except EngineError as e:
                log.warning("taking up the leadership: cannot load the leases yet (%s)", e)
                await asyncio.sleep(0.2)
        else:
            self._writable = False
            return
        self.lessor = lessor
        self.store.lease_exists = lessor.exists
        self.lease_service.lessor = lessor
        self._serving = True
        log.warning("leading term %d from revision %d", term, rev)
        if not still_leader():
            await self._demote()

    async def _demote(self) -> None:
        self._serving = False
        self._writable = False
        self._notify()
        lessor, self.lessor = self.lessor, None
        self.store.lease_exists = lambda _id: False
        if lessor is not None:
            await lessor.stop()
            lessor.detach()
        log.warning("following again from revision %d", self.store.rev)

    async def stop(self) -> None:
        """Hand the leadership over at once (if held), stop the duties,
        leave the member list."""
        await cancel_and_wait(self._reconciler)
        await self.follower.stop()
        if self._writable:
            await self._demote()
        await self.election.stop(release=True)
        await self.members.stop()
        await self.forwarder.close()
