"""CPU time and memory of a server process, read from /proc/PID/stat and
/proc/PID/status (Linux). Used only for servers whose pid we know."""
from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float  # user + system time so far
    rss_bytes: int  # resident set now (VmRSS)
    peak_rss_bytes: int  # high-water resident set over the process's life (VmHWM)
    # of rss_bytes, the process's own memory (the rest is pages of files it
    # maps: a database file read through mmap, as LevelDB's tables and etcd's
    # bbolt are, the kernel's page cache, which it can reclaim)
    anon_bytes: int = 0


def sample(pid: int) -> ProcSample | None:
    """None when the process is gone or /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read().decode()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = peak = anon = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
        elif line.startswith("RssAnon:"):
            anon = int(line.split()[1]) * 1024
    return ProcSample((utime + stime) / _TICKS, rss, peak, anon)


def cpu_pct(before: ProcSample | None, after: ProcSample | None, wall_s: float) -> float | None:
    """CPU use over a window, in percent of one core (200 = two cores busy)."""
    if before is None or after is None or wall_s <= 0:
        return None
    return 100.0 * (after.cpu_s - before.cpu_s) / wall_s
