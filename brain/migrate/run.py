"""One migration: copy the source's keys at its compact revision, replay its
history from there, then follow its changes until told to stop."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncGenerator, Callable

from brain.migrate.importer import RevisionImporter
from brain.migrate.source import EtcdSource, WatchBatch
from engines import open_engine

log = logging.getLogger("brain.migrate")


@dataclass
class Progress:
    phase: str = "connecting"
    keys_copied: int = 0
    applied_rev: int = 0
    source_rev: int = 0
    revisions_applied: int = 0
    leases: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def lag(self) -> int:
        return max(self.source_rev - self.applied_rev, 0)

    def line(self) -> str:
        took = time.monotonic() - self.started
        if self.phase == "copying":
            return f"copying keys at revision {self.applied_rev}: {self.keys_copied:,} keys ({took:.0f} s)"
        return (f"{self.phase}: at revision {self.applied_rev:,}, source at {self.source_rev:,}, "
                f"lag {self.lag:,} revisions; {self.revisions_applied:,} revisions replayed ({took:.0f} s)")


@dataclass
class MigrationOptions:
    data_dir: str
    engine: str = "leveldb"
    # stop once caught up with the source's revision as of the end of the copy
    once: bool = False
    report_every: float = 1.0


async def migrate(source: EtcdSource, options: MigrationOptions, stop: asyncio.Event,
                  report: Callable[[Progress], None]) -> Progress:
    progress = Progress()
    engine = open_engine(options.engine, data_dir=options.data_dir)
    reporter = asyncio.get_running_loop().create_task(_report(source, progress, options.report_every, report, stop))
    try:
        importer = RevisionImporter(engine)
        header = await source.header()
        progress.source_rev = header.revision
        resumed = await importer.open(header.cluster_id)
        if not resumed:
            compact = await source.compact_revision()
            await importer.begin(header.cluster_id, compact)
            progress.phase, progress.applied_rev = "copying", compact
            if compact:
                async for page in source.keys_at(compact):
                    progress.keys_copied += await importer.base(page)
            await importer.finish_base()
        progress.applied_rev = importer.rev
        await _sync_leases(source, importer, progress)
        target = (await source.header()).revision if options.once else None
        progress.phase = "replaying"
        if not (target is not None and importer.rev >= target):
            await _follow(source, importer, progress, stop, target)
        progress.phase = "stopping"
        await _sync_leases(source, importer, progress)
        await importer.flush()
        progress.phase = "done"
        return progress
    finally:
        reporter.cancel()
        await engine.close()


async def _sync_leases(source: EtcdSource, importer: RevisionImporter, progress: Progress) -> None:
    ttls = await source.leases()
    await importer.leases(ttls)
    progress.leases = len(ttls)


async def _follow(source: EtcdSource, importer: RevisionImporter, progress: Progress, stop: asyncio.Event,
                  target: int | None) -> None:
    changes: AsyncGenerator[WatchBatch, None] = source.changes(importer.rev + 1)  # type: ignore[assignment]
    stopping = asyncio.get_running_loop().create_task(stop.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(changes.__anext__())
            done, _ = await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt  # the generator must be idle before it is closed
                return
            batch = nxt.result()
            progress.source_rev = max(progress.source_rev, batch.source_rev)
            for rev, events in batch.revisions:
                await importer.revision(rev, events)
                progress.revisions_applied += 1
            progress.applied_rev = importer.rev
            if progress.phase == "replaying" and importer.rev >= progress.source_rev:
                progress.phase = "following"
            if target is not None and importer.rev >= target:
                return
    finally:
        stopping.cancel()
        await changes.aclose()


async def _report(source: EtcdSource, progress: Progress, every: float, report: Callable[[Progress], None],
                  stop: asyncio.Event) -> None:
    while True:
        await asyncio.sleep(every)
        if progress.phase in ("replaying", "following"):
            try:
                progress.source_rev = max(progress.source_rev, (await source.header()).revision)
            except Exception as e:  # the report must not end the migration
                log.debug("source revision: %s", e)
        report(progress)
