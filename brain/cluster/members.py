"""Who serves the key prefix: one heartbeat record per member in the engine.

Each member writes `mmember/<id:016x>` -> JSON {id, name, client_urls,
heartbeat} every `heartbeat_interval`; MemberList shows the members whose
heartbeat is younger than `member_ttl`, so a member that died disappears
within that time. Heartbeats are wall-clock seconds: the hosts' clocks must
agree to within a fraction of the TTL (NTP), which only affects the listing,
never the election or the data. A member that stops on purpose deletes its
record.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from brain.tasks import cancel_and_wait
from brain.mvcc import records as K
from engines.base import Engine, EngineError, WriteBatch

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 1.0
DEFAULT_MEMBER_TTL = 10.0


@dataclass(frozen=True, slots=True)
class MemberRecord:
    id: int
    name: str
    client_urls: list[str] = field(default_factory=list)
    heartbeat: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> MemberRecord | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None


def member_key(member_id: int) -> bytes:
    return K.META_MEMBER_PREFIX + b"%016x" % member_id


class MemberRegistry:
    def __init__(
        self,
        engine: Engine,
        me: MemberRecord,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        member_ttl: float = DEFAULT_MEMBER_TTL,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.me = me
        self.heartbeat_interval = heartbeat_interval
        self.member_ttl = member_ttl
        self.wall_clock = wall_clock
        self._task: asyncio.Task | None = None

    async def beat(self) -> None:
        wb = WriteBatch()
        wb.put(member_key(self.me.id), MemberRecord(self.me.id, self.me.name, list(self.me.client_urls), self.wall_clock()).encode())
        await self.engine.write(wb)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="member-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except EngineError as e:
                log.warning("member heartbeat failed (%s)", e)
            except Exception:
                log.exception("member heartbeat failed")
            await asyncio.sleep(self.heartbeat_interval)

    async def live(self) -> list[MemberRecord]:
        """The members with a recent heartbeat, by id; this member always."""
        end = K.META_MEMBER_PREFIX[:-1] + bytes([K.META_MEMBER_PREFIX[-1] + 1])
        now = self.wall_clock()
        found: dict[int, MemberRecord] = {self.me.id: self.me}
        for _, raw in await self.engine.scan(K.META_MEMBER_PREFIX, end):
            rec = MemberRecord.decode(raw)
            if rec is not None and now - rec.heartbeat < self.member_ttl:
                found.setdefault(rec.id, rec)
        return [found[i] for i in sorted(found)]

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        wb = WriteBatch()
        wb.delete(member_key(self.me.id))
        try:
            await self.engine.write(wb)
        except EngineError as e:
            log.warning("could not remove this member's record (%s); it ages out", e)
