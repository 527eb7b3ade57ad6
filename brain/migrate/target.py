"""Where a migration writes: the contract run.py drives, met by a data
directory (importer.RevisionImporter) and by a running brain started with
--migration-target (remote.BrainTarget)."""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

from brain.etcdpb import kv_pb2
from brain.migrate.importer import Event


class ImportTarget(Protocol):
    rev: int  # the last source revision applied (1: none yet)

    async def open(self, source_id: int) -> bool:
        """Check the target takes this source; True when a previous run's
        state is there to carry on from (rev)."""
        ...

    async def begin(self, source_id: int, compact_rev: int) -> None:
        """Start a migration whose base is the source's keys at compact_rev."""
        ...

    async def base(self, kvs: Iterable[kv_pb2.KeyValue]) -> int:
        """A page of the keys live at the compact revision; how many."""
        ...

    async def finish_base(self) -> None:
        """Every key of the base is written: the target is at the compact revision."""
        ...

    async def revisions(self, revisions: Sequence[tuple[int, list[Event]]]) -> None:
        """Source revisions, ascending, each applied at its own number."""
        ...

    async def leases(self, ttls: dict[int, int]) -> None:
        """Make the target's leases exactly ttls (id -> remaining TTL)."""
        ...

    async def flush(self) -> None:
        """Make everything written so far durable."""
        ...

    async def close(self) -> None:
        ...
