"""Leader election through the engine: a lease record and a fencing term.

Several brain processes serve one TiKV key prefix; one of them, the leader,
commits. Two engine keys (in the metadata namespace) elect it:

  mleader       -> the lease: a LeaderRecord (member id, client URL, term,
                   a renewal count, the lease duration), JSON
  mleader-term  -> the term of the current leader, 8 bytes

The leader renews the lease every `renew_interval` with a commit conditional
on the record's previous bytes; each renewal changes the bytes (the renewal
count), so a renewal also proves that nobody took the lease over meanwhile.

A follower takes over once the record's bytes have not changed for the
record's lease duration, measured on its own monotonic clock from when it
first saw those bytes (so no two hosts' wall clocks are compared). It writes
a new record with term + 1 and the term key, conditional on the bytes it saw.
The old leader counts its own lease from before its last successful
renewal was sent, so it stops acknowledging writes no later than any
follower can take over (both clocks running at the same rate).

A leader stopping on purpose writes a record with no lease left, and one
handing over (etcd's MoveLeader) names a successor in the record: then a
follower, or the successor alone, takes over at its next round.

The term key is the fence: every MVCC commit of the leader is conditional on
it still holding the leader's term (MVCCStore.fence), and TiKV's Percolator
commit refuses a transaction when a key it read or locked was written after
it began. A leader paused past its lease, whose successor has written the
term key, therefore cannot commit anything after it resumes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

from brain.tasks import cancel_and_wait
from brain.mvcc import records as K
from engines.base import ConflictError, Engine, EngineError, WriteBatch

log = logging.getLogger(__name__)

LEADER_KEY = K.META_LEADER
TERM_KEY = K.META_LEADER_TERM

# The leader's lease, and how often it renews it: a leader survives four
# missed renewals (engine hiccups) before it stops acknowledging writes.
DEFAULT_LEASE_SECONDS = 5.0
DEFAULT_RENEW_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    member_id: int
    client_url: str
    term: int
    # every renewal counts up, so that the record's bytes change with it
    renewal: int
    lease_seconds: float
    # set by a leader handing over (etcd's MoveLeader): that member takes
    # over at once, the others only once the lease has run out as usual
    successor: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> LeaderRecord | None:
        if raw is None:
            return None
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError) as e:
            log.error("unreadable leader record %r (%s): treating it as expired", raw[:200], e)
            return None


def pack_term(term: int) -> bytes:
    return K.pack_rev(term)


def unpack_term(raw: bytes | None) -> int:
    return K.decode_rev(raw)


class Election:
    """This member's side of the election: campaigns while a follower,
    renews while the leader. `changed` is set whenever the role or the
    known leader changes."""

    def __init__(
        self,
        engine: Engine,
        member_id: int,
        client_url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        renew_interval: float = DEFAULT_RENEW_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.member_id = member_id
        self.client_url = client_url
        self.lease_seconds = lease_seconds
        self.renew_interval = renew_interval
        self.clock = clock
        self.changed = asyncio.Event()
        self.is_leader = False
        self.term = 0  # this member's term while it leads
        self.leader: LeaderRecord | None = None  # the newest record seen
        self.leader_changes = 0  # leaders seen since the start (for metrics)
        self._held: bytes | None = None  # the record bytes this leader last wrote
        self._held_unsure = False  # its last write's outcome is unknown
        self._valid_until = 0.0
        self._seen: bytes | None = None  # the record bytes a follower saw last
        self._seen_at = 0.0
        # the first round of this process: a record of its own from then is
        # from before a restart, and is taken over at once
        self._first_round = True
        # a takeover whose outcome is unknown: the record it wrote, and when
        # it was sent (its lease counts from then, if it landed)
        self._attempt: tuple[bytes, float] | None = None
        self._task: asyncio.Task | None = None

    # -- the fence (see MVCCStore.fence) ---------------------------------------

    def lease_valid(self) -> bool:
        return self.is_leader and self.clock() < self._valid_until

    def expectations(self) -> list[tuple[bytes, bytes | None]]:
        return [(TERM_KEY, pack_term(self.term))]

    @property
    def leader_id(self) -> int:
        return self.leader.member_id if self.leader is not None else 0

    # -- the loop ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leader-election")

    async def stop(self, release: bool = True) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if release and self.is_leader:
            await self._release()

    async def _run(self) -> None:
        while True:
            try:
                wait = await (self._renew() if self.is_leader else self._campaign())
            except asyncio.CancelledError:
                raise
            except EngineError as e:
                log.warning("leader election: the engine did not answer (%s)", e)
                wait = self.renew_interval
            except Exception:
                log.exception("leader election round failed")
                wait = self.renew_interval
            await asyncio.sleep(wait)

    def _set_leader(self, record: LeaderRecord | None) -> None:
        def who(r: LeaderRecord | None) -> tuple[int, int] | None:
            return (r.member_id, r.term) if r is not None else None

        if who(record) != who(self.leader):
            self.changed.set()
            if record is not None:
                self.leader_changes += 1
        self.leader = record

    async def _campaign(self) -> float:
        """One follower round: note the record, take it over once expired.
        Returns how long to wait before the next round."""
        started = self.clock()
        raw, raw_term = await self.engine.batch_get([LEADER_KEY, TERM_KEY])
        record = LeaderRecord.decode(raw)
        attempt, self._attempt = self._attempt, None
        if attempt is not None and record is not None and raw == attempt[0]:
            # the last takeover's outcome was unknown, and it did land
            self._become_leader(record, attempt[1])
            log.warning("elected leader for term %d (the outcome of the takeover was unknown)", record.term)
            return self.renew_interval
        if raw != self._seen:
            self._seen, self._seen_at = raw, started
        self._set_leader(record)
        restarted, self._first_round = self._first_round, False
        if record is not None and record.successor != self.member_id and not (restarted and record.member_id == self.member_id):
            left = self._seen_at + record.lease_seconds - started
            if left > 0:
                return min(self.renew_interval, left)
        # expired, released, absent, handed to this member, or its own from
        # before a restart
        term = max(unpack_term(raw_term), record.term if record else 0) + 1
        mine = LeaderRecord(self.member_id, self.client_url, term, 0, self.lease_seconds)
        wb = WriteBatch()
        wb.put(LEADER_KEY, mine.encode())
        wb.put(TERM_KEY, pack_term(term))
        self._attempt = (mine.encode(), started)
        try:
            await self.engine.commit_if([(LEADER_KEY, raw), (TERM_KEY, raw_term)], wb)
            self._attempt = None
        except ConflictError:
            self._attempt = None
            log.info("leader election: another member took term %d first", term)
            return 0.0
        self._become_leader(mine, started)
        log.warning("elected leader for term %d (previous: %s)", term,
                    f"member {record.member_id:x} term {record.term}" if record else "none")
        return self.renew_interval

    def _become_leader(self, record: LeaderRecord, started: float) -> None:
        self.term = record.term
        self._held = record.encode()
        self._held_unsure = False
        self._valid_until = started + self.lease_seconds
        self.is_leader = True
        self._set_leader(record)
        self.changed.set()

    def _deposed(self, why: str) -> None:
        log.warning("no longer the leader of term %d: %s", self.term, why)
        self.is_leader = False
        self._held = None
        self._seen = None
        self.changed.set()

    async def _renew(self) -> float:
        started = self.clock()
        if self._held_unsure:
            # the last renewal's outcome is unknown: the record tells
            raw = await self.engine.get(LEADER_KEY)
            if not self.is_leader:  # handed over meanwhile
                return 0.0
            record = LeaderRecord.decode(raw)
            if record is None or record.member_id != self.member_id or record.term != self.term:
                self._deposed("the lease record changed hands")
                return 0.0
            self._held, self._held_unsure = raw, False
        held = LeaderRecord.decode(self._held)
        assert held is not None
        nxt = replace(held, renewal=held.renewal + 1, lease_seconds=self.lease_seconds)
        wb = WriteBatch()
        wb.put(LEADER_KEY, nxt.encode())
        try:
            await self.engine.commit_if([(LEADER_KEY, self._held)], wb)
        except ConflictError:
            self._held_unsure = True  # read back on the next round
            return 0.0
        except EngineError:
            self._held_unsure = True
            raise
        if not self.is_leader:  # handed over meanwhile (that write then failed)
            return 0.0
        self._held = nxt.encode()
        self._valid_until = started + self.lease_seconds
        self.leader = nxt
        return max(self.renew_interval - (self.clock() - started), 0.0)

    async def hand_over(self, successor: int) -> None:
        """etcd's MoveLeader: the record names successor, which takes over
        at its next round; this member stops leading at once. Raises
        ConflictError when a renewal changed the record first."""
        held = LeaderRecord.decode(self._held)
        if not self.is_leader or held is None:
            raise ConflictError("not the leader")
        wb = WriteBatch()
        wb.put(LEADER_KEY, replace(held, renewal=held.renewal + 1, successor=successor).encode())
        await self.engine.commit_if([(LEADER_KEY, self._held)], wb)
        self._deposed(f"handed over to member {successor:x}")

    async def _release(self) -> None:
        """A leader stopping on purpose: a record with no lease left, so a
        follower takes over at its next round instead of a lease later."""
        held = LeaderRecord.decode(self._held)
        if held is None:
            return
        self.is_leader = False
        wb = WriteBatch()
        wb.put(LEADER_KEY, replace(held, renewal=held.renewal + 1, lease_seconds=0.0).encode())
        try:
            await self.engine.commit_if([(LEADER_KEY, self._held)], wb)
            log.info("released the leadership of term %d", self.term)
        except EngineError as e:
            log.warning("could not release the leadership (%s); it expires with its lease", e)
