"""One run of one workload with the Python client: the work split over client
processes, and their results merged into one record."""
from __future__ import annotations

import os
import uuid
from collections import Counter
from typing import Any

from bench.harness import Hooks, run_children
from bench.job import ChildJob
from bench.latency import summarize_ms
from bench.settings import Settings
from bench.watchload import DRAIN_LIMIT_S


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def jobs_for(workload: str, target: str, settings: Settings) -> list[ChildJob]:
    tag = uuid.uuid4().hex[:10]
    if workload == "watch":
        watchers = _split(settings.watchers, settings.client_procs)
        streams = _split(settings.watch_streams, len(watchers))
        jobs = [
            ChildJob("watcher", workload, target, i, slots=w, streams=s, tag=tag, settings=settings)
            for i, (w, s) in enumerate(zip(watchers, streams))
        ]
        # the writer has a process of its own, so its puts never queue behind event decoding
        jobs.append(ChildJob("writer", workload, target, len(jobs), slots=settings.watch_put_inflight, streams=0, tag=tag, settings=settings))
        return jobs
    inflight = settings.list_inflight if workload == "list" else settings.inflight
    return [
        ChildJob("closed_loop", workload, target, i, slots=n, streams=0, tag=tag, settings=settings)
        for i, n in enumerate(_split(inflight, settings.client_procs))
    ]


def _client_cpu(results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    cpus = [r["cpu_s"] for r in results]
    cores = os.cpu_count() or 1
    total = 100.0 * sum(cpus) / wall if wall > 0 else None
    return {
        "client_procs": len(results),
        # percent of one core, summed over the client processes
        "client_cpu_pct": total,
        # the busiest single process: near 100 means the client limited the rate
        "client_busiest_pct": 100.0 * max(cpus) / wall if wall > 0 else None,
        "client_machine_pct": total / cores if total is not None else None,
    }


def _errors(results: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    for r in results:
        kinds.update(r["errors"])
    first = next((r["first_error"] for r in results if r["first_error"]), None)
    return {"errors": sum(kinds.values()), "error_kinds": dict(kinds), "first_error": first}


def run(workload: str, target: str, settings: Settings, hooks: Hooks) -> dict[str, Any]:
    jobs = jobs_for(workload, target, settings)
    tail = DRAIN_LIMIT_S if workload == "watch" else 0.0
    results, t_start = run_children(jobs, settings.duration, hooks, tail)
    if workload == "watch":
        return _merge_watch(jobs, results, t_start)
    wall = max(r["end"] for r in results) - t_start
    lat = [x for r in results for x in r["lat"]]
    ops = sum(r["ops"] for r in results)
    out: dict[str, Any] = {"client": "python", "ops": ops, "wall_s": wall, "ops_per_s": ops / wall if wall > 0 else 0.0}
    out.update(summarize_ms(lat))
    out.update(_errors(results))
    out.update(_client_cpu(results, wall))
    extra: Counter[str] = Counter()
    for r in results:
        extra.update(r["extra"])
    if workload == "list" and extra.get("pages"):
        out["pages_per_s"] = extra["pages"] / wall
    return out


def _merge_watch(jobs: list[ChildJob], results: list[dict[str, Any]], t_start: float) -> dict[str, Any]:
    writer = results[-1]
    watchers = results[:-1]
    events = sum(r["ops"] for r in watchers)
    expected = sum(r["extra"]["expected"] or 0 for r in watchers)
    last_event = max(r["end"] for r in watchers)
    wall = max(last_event, writer["end"]) - t_start
    put_phase = writer["end"] - t_start
    lags = [x for r in watchers for x in r["lat"]]
    out: dict[str, Any] = {
        "client": "python",
        "ops": events,
        "wall_s": wall,
        "ops_per_s": events / wall if wall > 0 else 0.0,
        "events_expected": expected,
        "complete": events >= expected > 0,
        "watchers": sum(j.slots for j in jobs[:-1]),
        "streams": sum(max(1, min(j.streams, j.slots)) for j in jobs[:-1]),
        "puts": writer["ops"],
        "puts_per_s": writer["ops"] / put_phase if put_phase > 0 else 0.0,
        # from the last put's answer to the last event's arrival
        "drain_ms": max(0.0, 1e3 * (last_event - writer["end"])),
    }
    out.update(summarize_ms(lags))
    out.update(_errors(results))
    out.update(_client_cpu(results, wall))
    return out
