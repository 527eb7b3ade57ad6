"""etcd's alarms: the set of (member, alarm type) pairs raised on the cluster.

An alarm is raised by the server itself (NOSPACE when a write would take the
database past its space quota, see quota.py) or by a client through
Maintenance.Alarm ACTIVATE, and stays until a client deactivates it
(`etcdctl alarm disarm`). Like etcd's, the set survives a restart: it is kept
in the engine under one metadata key.

While a NOSPACE alarm is active, etcd refuses Puts, Txns with puts and
LeaseGrants (its "capped" applier); `nospace` is the flag the write paths
test for that. A CORRUPT alarm is listed and persisted as etcd does, but
brain runs no corruption checker and does not refuse requests for it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from brain.etcdpb import rpc_pb2
from brain.mvcc import records as K
from engines.base import Engine, EngineError, WriteBatch

log = logging.getLogger(__name__)

NONE = rpc_pb2.NONE
NOSPACE = rpc_pb2.NOSPACE
CORRUPT = rpc_pb2.CORRUPT

_GET = rpc_pb2.AlarmRequest.GET
_ACTIVATE = rpc_pb2.AlarmRequest.ACTIVATE
_DEACTIVATE = rpc_pb2.AlarmRequest.DEACTIVATE


@dataclass(frozen=True, order=True)
class Alarm:
    alarm: int  # rpc_pb2.AlarmType
    member_id: int

    def message(self) -> rpc_pb2.AlarmMember:
        return rpc_pb2.AlarmMember(memberID=self.member_id, alarm=self.alarm)  # type: ignore[arg-type]  # an AlarmType value

    def status_error(self) -> str:
        """How etcd's Status lists the alarm in `errors` (the text form of
        its AlarmMember message, trailing space included)."""
        return f"memberID:{self.member_id} alarm:{rpc_pb2.AlarmType.Name(self.alarm)} "


@dataclass
class AlarmStore:
    engine: Engine
    sync: bool = True
    active: set[Alarm] = field(default_factory=set)
    # etcd's capped mode: set while any NOSPACE alarm is active
    nospace: bool = False
    # run (and awaited) when the last NOSPACE alarm is deactivated, before
    # the answer: the quota measures the database again, so that the next
    # write is judged by its size now
    on_nospace_cleared: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def open(cls, engine: Engine, sync: bool = True) -> AlarmStore:
        store = cls(engine, sync)
        raw = await engine.get(K.META_ALARMS)
        if raw:
            saved = rpc_pb2.AlarmResponse.FromString(raw)
            store.active = {Alarm(a.alarm, a.memberID) for a in saved.alarms}
            store.nospace = any(a.alarm == NOSPACE for a in store.active)
            for a in sorted(store.active):
                log.warning("alarm active since before the restart: %s", a.status_error().strip())
        return store

    def get(self, alarm: int = NONE) -> list[Alarm]:
        """The active alarms of one type, or all of them for NONE (as etcd)."""
        return sorted(a for a in self.active if alarm == NONE or a.alarm == alarm)

    def status_errors(self) -> list[str]:
        return [a.status_error() for a in sorted(self.active)]

    async def activate(self, member_id: int, alarm: int) -> Alarm | None:
        """Raise an alarm; None for NONE, which etcd ignores."""
        if alarm == NONE:
            return None
        a = Alarm(alarm, member_id)
        async with self._lock:
            if a not in self.active:
                self.active.add(a)
                if alarm == NOSPACE:
                    self.nospace = True
                log.warning("alarm raised: %s", a.status_error().strip())
                await self._save()
        return a

    async def deactivate(self, member_id: int, alarm: int) -> Alarm | None:
        """Clear an alarm; None if it was not active."""
        a = Alarm(alarm, member_id)
        async with self._lock:
            if a not in self.active:
                return None
            self.active.discard(a)
            cleared = alarm == NOSPACE and not any(x.alarm == NOSPACE for x in self.active)
            if cleared:
                self.nospace = False
            log.warning("alarm disarmed: %s", a.status_error().strip())
            await self._save()
        if cleared:
            for hook in self.on_nospace_cleared:
                await hook()
        return a

    async def answer(self, r: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """Maintenance.Alarm: GET lists, ACTIVATE and DEACTIVATE answer with
        the alarm they changed (nothing when there was nothing to change)."""
        resp = rpc_pb2.AlarmResponse()
        if r.action == _GET:
            found = self.get(r.alarm)
        elif r.action == _ACTIVATE:
            a = await self.activate(r.memberID, r.alarm)
            found = [a] if a is not None else []
        elif r.action == _DEACTIVATE:
            a = await self.deactivate(r.memberID, r.alarm)
            found = [a] if a is not None else []
        else:
            found = []
        resp.alarms.extend(a.message() for a in found)
        return resp

    async def _save(self) -> None:
        """Persist the set. A failure (e.g. a full disk) is logged: the alarm
        still holds in this process, and is raised again after a restart
        when the cause remains."""
        saved = rpc_pb2.AlarmResponse(alarms=[a.message() for a in sorted(self.active)])
        wb = WriteBatch()
        if self.active:
            wb.put(K.META_ALARMS, saved.SerializeToString())
        else:
            wb.delete(K.META_ALARMS)
        try:
            await self.engine.write(wb, sync=self.sync)
        except EngineError as e:
            log.error("cannot persist the alarms (%s); they hold until this process stops", e)
