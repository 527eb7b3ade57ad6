"""etcd's auto-compaction (--auto-compaction-mode, --auto-compaction-retention).

Periodic mode keeps the history of the last retention period: the revision
is sampled every tenth of the compaction interval (the period, at most an
hour), the samples cover one period, and once a period has passed since the
start (then every compaction interval since the last success) the store is
compacted at the oldest sample, the revision of one period ago. Revision
mode keeps the last N revisions: every check interval (etcd's is five
minutes) it compacts at the current revision minus N.

Both compact as a client's Compact does (not physical: the pruning runs in
the background), and count "already compacted" as done.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from dataclasses import dataclass, field

from brain.tasks import cancel_and_wait
from brain.errors import DomainError
from brain.mvcc.errors import CompactedError
from brain.mvcc.kv import KV

log = logging.getLogger(__name__)

PERIODIC = "periodic"
REVISION = "revision"
MODES = (PERIODIC, REVISION)
REVISION_CHECK_INTERVAL = 300.0  # etcd's, seconds
_HOUR = 3600.0
_RETRY_DIVISOR = 10

# Go's time.ParseDuration: a signed sequence of decimal numbers with units
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)?")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": _HOUR}


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration such as 1h30m, 90s or 1.5h."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f'time: invalid duration "{text}"')
        if m.group(2) is None:
            raise ValueError(f'time: missing unit in duration "{text}"')
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_retention(mode: str, text: str) -> float:
    """The retention of a mode, as etcd reads the flag: a bare non-negative
    integer means hours in periodic mode and revisions in revision mode;
    anything else must be a Go duration (in revision mode etcd then takes
    the duration's nanoseconds as the revision count, and so does this).
    Seconds for periodic mode, revisions for revision mode; 0 disables."""
    if mode not in MODES:
        raise ValueError(f'unknown auto-compaction-mode "{mode}"')
    text = text.strip()
    if text.isdigit():
        n = int(text)
        return n * _HOUR if mode == PERIODIC else float(n)
    try:
        seconds = parse_go_duration(text)
    except ValueError as e:
        raise ValueError(f"error parsing CompactionRetention: {e}") from None
    if seconds < 0:
        raise ValueError(f'negative auto-compaction-retention "{text}"')
    return seconds if mode == PERIODIC else float(round(seconds * 1e9))


@dataclass
class AutoCompactor:
    store: KV
    mode: str
    retention: float  # seconds (periodic) or revisions (revision), > 0
    revision_check_interval: float = REVISION_CHECK_INTERVAL
    _task: asyncio.Task | None = field(default=None, repr=False)

    def start(self) -> None:
        run = self._periodic if self.mode == PERIODIC else self._revision
        log.info("auto-compaction: mode %s, retention %s", self.mode, self.retention)
        self._task = asyncio.get_running_loop().create_task(run(), name="auto-compaction")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _compact(self, rev: int) -> bool:
        """Compact at rev; whether the store is compacted at rev or beyond."""
        try:
            await self.store.compact(rev, False)
        except CompactedError:
            return True
        except DomainError as e:
            log.warning("auto-compaction at revision %d failed: %s", rev, e)
            return False
        log.info("auto-compaction: compacted at revision %d", rev)
        return True

    async def _periodic(self) -> None:
        period = self.retention
        compact_interval = min(period, _HOUR)
        retry_interval = compact_interval / _RETRY_DIVISOR
        # samples one retry interval apart spanning a period: the first is
        # the revision of one period ago
        samples: deque[int] = deque(maxlen=int(period / retry_interval) + 1)
        clock = asyncio.get_running_loop().time
        last_success = clock()
        last_rev = 0
        wait = period  # the first compaction waits a whole period
        while True:
            samples.append(self.store.rev)
            await asyncio.sleep(retry_interval)
            rev = samples[0]
            if clock() - last_success < wait or rev == last_rev:
                continue
            wait = compact_interval
            if await self._compact(rev):
                last_rev = rev
                last_success = clock()

    async def _revision(self) -> None:
        keep = int(self.retention)
        last_rev = 0
        while True:
            await asyncio.sleep(self.revision_check_interval)
            rev = self.store.rev - keep
            if rev <= 0 or rev == last_rev:
                continue
            if await self._compact(rev):
                last_rev = rev
