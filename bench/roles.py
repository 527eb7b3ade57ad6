"""What a client process does, by ChildJob.role."""
from __future__ import annotations

import grpc

from bench.closedloop import ClosedLoop
from bench.job import ChildJob
from bench.watchload import Watcher, Writer


def make_role(job: ChildJob, channels: list[grpc.aio.Channel], counters):
    if job.role == "closed_loop":
        return ClosedLoop(job, channels, counters)
    if job.role == "watcher":
        return Watcher(job, channels, counters)
    if job.role == "writer":
        return Writer(job, channels, counters)
    raise ValueError(f"unknown client role {job.role!r}")
