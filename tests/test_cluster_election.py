"""The election's rules, round by round, on the in-memory engine (its
commit_if is the conditional write the election needs) and a clock the test
moves: who may take the lease over and when, with which term, and what a
renewal or a handover does. The election against the real tikv-client and
real processes is in test_tikv_ha.py."""
from __future__ import annotations

import asyncio

from brain.cluster.election import LEADER_KEY, TERM_KEY, Election, LeaderRecord, unpack_term
from engines.base import WriteBatch
from engines.memory import MemoryEngine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def member(engine: MemoryEngine, clock: Clock, member_id: int) -> Election:
    return Election(engine, member_id, f"http://m{member_id}", lease_seconds=5.0, renew_interval=1.0, clock=clock)


async def record(engine: MemoryEngine) -> LeaderRecord | None:
    return LeaderRecord.decode(await engine.get(LEADER_KEY))


def run(coro) -> None:
    asyncio.run(coro)


def test_first_member_leads_then_others_wait_for_the_lease_seen_unchanged():
    async def scenario() -> None:
        engine, clock = MemoryEngine(), Clock()
        a, b = member(engine, clock, 1), member(engine, clock, 2)
        await a._campaign()
        assert a.is_leader and a.term == 1 and a.lease_valid()
        assert unpack_term(await engine.get(TERM_KEY)) == 1
        await b._campaign()  # first sight of a's record: the lease counts from now
        assert not b.is_leader and b.leader_id == 1
        clock.now += 3
        await a._renew()  # the record changes: b's count starts over
        clock.now += 3
        await b._campaign()
        assert not b.is_leader, "a renewed 3 s ago"
        clock.now += 2.5
        assert not a.lease_valid(), "a's own lease, counted from before its renewal, ran out first"
        await b._campaign()
        assert not b.is_leader, "b counts from when it saw the renewal, 2.5 s ago"
        clock.now += 2.5
        await b._campaign()
        assert b.is_leader and b.term == 2
        assert (await record(engine)).member_id == 2
        await a._renew()  # a's renewal conflicts; the next round reads who leads
        assert a.is_leader
        await a._renew()
        assert not a.is_leader and a.expectations() != b.expectations()

    run(scenario())


def test_a_restarted_member_takes_its_own_record_back_at_once_but_not_later():
    async def scenario() -> None:
        engine, clock = MemoryEngine(), Clock()
        await member(engine, clock, 1)._campaign()
        again = member(engine, clock, 1)  # the same member, restarted
        await again._campaign()
        assert again.is_leader and again.term == 2
        # a member that is not on its first round waits even for its own record
        later = member(engine, clock, 1)
        later._first_round = False
        await later._campaign()
        assert not later.is_leader

    run(scenario())


def test_a_released_lease_is_taken_at_the_next_round_and_a_handover_by_the_successor_only():
    async def scenario() -> None:
        engine, clock = MemoryEngine(), Clock()
        a, b, c = member(engine, clock, 1), member(engine, clock, 2), member(engine, clock, 3)
        await a._campaign()
        await a._release()
        await b._campaign()
        assert b.is_leader and b.term == 2
        await c._campaign()
        assert not c.is_leader
        await b.hand_over(3)
        assert not b.is_leader
        await a._campaign()
        assert not a.is_leader, "the handover names member 3"
        await c._campaign()
        assert c.is_leader and c.term == 3

    run(scenario())


def test_a_takeover_whose_outcome_was_unknown_is_adopted_when_it_landed():
    async def scenario() -> None:
        engine, clock = MemoryEngine(), Clock()
        a = member(engine, clock, 1)
        mine = LeaderRecord(1, "http://m1", 1, 0, 5.0)
        wb = WriteBatch()
        wb.put(LEADER_KEY, mine.encode())
        await engine.write(wb)  # as if the takeover's commit landed without an answer
        a._first_round = False
        a._attempt = (mine.encode(), clock.now)
        await a._campaign()
        assert a.is_leader and a.term == 1 and a.lease_valid()

    run(scenario())
