"""One migration: copy the source's keys at its compact revision, replay its
history from there, then follow its changes until told to stop."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncGenerator, Callable

from brain.migrate.source import EtcdSource, WatchBatch
from brain.migrate.target import ImportTarget

log = logging.getLogger("brain.migrate")


@dataclass
class Progress:
    phase: str = "connecting"
    keys_copied: int = 0
    applied_rev: int = 0
    source_rev: int = 0
    revisions_applied: int = 0
    leases: int = 0
    aborted: bool = False
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
    # stop once caught up with the source's revision as of the end of the copy
    once: bool = False
    # on stop, first catch up with the source's revision at that moment (a
    # cut-over follows); otherwise stop at once (a later run resumes)
    catch_up_on_stop: bool = False
    report_every: float = 1.0


@dataclass
class Stop:
    """The operator's signals: stop asks for the end (after catching up,
    with catch_up_on_stop), abort for the end now."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    abort: asyncio.Event = field(default_factory=asyncio.Event)


async def migrate(source: EtcdSource, importer: ImportTarget, options: MigrationOptions, stop: Stop,
                  report: Callable[[Progress], None]) -> Progress:
    progress = Progress()
    reporter = asyncio.get_running_loop().create_task(_report(source, progress, options.report_every, report))
    try:
        header = await source.header()
        progress.source_rev = header.revision
        resumed = await importer.open(header.cluster_id)
        if not resumed:
            compact = await source.compact_revision()
            await importer.begin(header.cluster_id, compact)
            progress.phase, progress.applied_rev = "copying", compact
            if compact:
                async for page in source.keys_at(compact):
                    if stop.abort.is_set():
                        progress.aborted = True
                        return progress
                    progress.keys_copied += await importer.base(page)
            await importer.finish_base()
        progress.applied_rev = importer.rev
        await _sync_leases(source, importer, progress)
        target = (await source.header()).revision if options.once else None
        progress.phase = "replaying"
        if not (target is not None and importer.rev >= target):
            await _follow(source, importer, progress, stop, target, options.catch_up_on_stop)
        if progress.aborted:
            return progress
        progress.phase = "stopping"
        await _sync_leases(source, importer, progress)
        await importer.flush()
        progress.phase = "done"
        return progress
    finally:
        reporter.cancel()


async def _sync_leases(source: EtcdSource, importer: ImportTarget, progress: Progress) -> None:
    ttls = await source.leases()
    await importer.leases(ttls)
    progress.leases = len(ttls)


async def _follow(source: EtcdSource, importer: ImportTarget, progress: Progress, stop: Stop,
                  target: int | None, catch_up_on_stop: bool) -> None:
    changes: AsyncGenerator[WatchBatch, None] = source.changes(importer.rev + 1)  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    stopping = loop.create_task((stop.abort if catch_up_on_stop else stop.stop).wait())
    asked = loop.create_task(stop.stop.wait()) if catch_up_on_stop else None
    nxt: asyncio.Future | None = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(changes.__anext__())
            waits = {nxt, stopping} | ({asked} if asked is not None else set())
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if asked is not None and asked in done:
                # catch up with the source as it is now, then end
                asked = None
                latest = (await source.header()).revision
                target = latest if target is None else min(target, latest)
                progress.phase = "catching up"
            if stopping in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt  # the generator must be idle before it is closed
                progress.aborted = catch_up_on_stop
                return
            if target is not None and importer.rev >= target:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            if nxt not in done:
                continue
            batch, nxt = nxt.result(), None
            progress.source_rev = max(progress.source_rev, batch.source_rev)
            await importer.revisions(batch.revisions)
            progress.revisions_applied += len(batch.revisions)
            progress.applied_rev = importer.rev
            if progress.phase == "replaying" and importer.rev >= progress.source_rev:
                progress.phase = "following"
            if target is not None and importer.rev >= target:
                return
    finally:
        stopping.cancel()
        if asked is not None:
            asked.cancel()
        await changes.aclose()


async def _report(source: EtcdSource, progress: Progress, every: float, report: Callable[[Progress], None]) -> None:
    while True:
        await asyncio.sleep(every)
        if progress.phase in ("replaying", "following", "catching up"):
            try:
                progress.source_rev = max(progress.source_rev, (await source.header()).revision)
            except Exception as e:  # the report must not end the migration
                log.debug("source revision: %s", e)
        report(progress)
