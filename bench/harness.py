"""Client processes for the Python client.

Each process runs its own event loop (uvloop when installed) with its own
grpc.aio channels: one Python process saturates a core at a few thousand
requests per second, so the load is spread over processes rather than
coroutines alone. Processes are spawned, not forked: gRPC's threads do not
survive fork.

Protocol over one pipe per process: the child prepares (connects, warms up,
creates what it needs) and sends ("ready", _); the parent sends ("go",
t_start, t_end) in time.monotonic() seconds, which on Linux is one clock for
every process of the machine; the child answers ("done", result), then
("cleaned", _) after its optional cleanup. Any failure is ("error", text).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.job import RPC_TIMEOUT_S, ChildJob

# how long a child may take to connect and prepare, and to clean up
PREPARE_TIMEOUT_S = 180.0
CLEANUP_TIMEOUT_S = 60.0
class ChildFailed(RuntimeError):
    pass


@dataclass
class Hooks:
    """What the parent does around the timed window."""

    started: Callable[[], None] = lambda: None
    # (seconds into the window, operations so far across processes)
    tick: Callable[[float, int], None] = lambda elapsed, ops: None
    finished: Callable[[], None] = lambda: None


def run_children(jobs: list[ChildJob], duration: float, hooks: Hooks, tail_s: float) -> tuple[list[dict[str, Any]], float]:
    """Run one timed window on len(jobs) processes. Returns each child's
    result and the window's start (monotonic). tail_s: how long after the
    window the children may still need (drain, in-flight requests)."""
    ctx = multiprocessing.get_context("spawn")
    # one progress slot per child, plus one shared word (the watch writer's
    # final put count, -1 until it is known)
    counters = ctx.Array("q", len(jobs) + 1, lock=False)
    counters[len(jobs)] = -1
    pipes = [ctx.Pipe() for _ in jobs]
    procs = [
        ctx.Process(target=child_main, args=(job, child_end, counters), name=f"brain-bench-{job.role}-{job.index}", daemon=True)
        for job, (_, child_end) in zip(jobs, pipes)
    ]
    conns = [parent_end for parent_end, _ in pipes]
    try:
        for p in procs:
            p.start()
        _gather(conns, "ready", time.monotonic() + PREPARE_TIMEOUT_S)
        # a short lead so that every child is waiting before the window opens
        t_start = time.monotonic() + 0.2
        t_end = t_start + duration
        for c in conns:
            c.send(("go", t_start, t_end))
        time.sleep(max(0.0, t_start - time.monotonic()))
        hooks.started()
        results = _gather(conns, "done", t_end + tail_s + RPC_TIMEOUT_S, hooks, counters, t_start)
        hooks.finished()
        if any(j.settings.cleanup for j in jobs):
            _gather(conns, "cleaned", time.monotonic() + CLEANUP_TIMEOUT_S)
        return results, t_start
    finally:
        for p in procs:
            p.join(timeout=5)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in conns:
            c.close()


def _gather(conns, expect: str, deadline: float, hooks: Hooks | None = None, counters=None, t_start: float = 0.0) -> list[Any]:
    """Wait for one `expect` message from every child, ticking the hooks
    about five times a second."""
    pending = dict(enumerate(conns))
    out: list[Any] = [None] * len(conns)
    while pending:
        now = time.monotonic()
        if now > deadline:
            raise ChildFailed(f"client processes did not report {expect!r} in time")
        ready = multiprocessing.connection.wait(list(pending.values()), timeout=min(0.2, deadline - now))
        for c in ready:
            i = next(k for k, v in pending.items() if v is c)
            try:
                msg = c.recv()  # type: ignore[union-attr, call-arg]  # a Connection, never a socket here
            except EOFError:
                raise ChildFailed(f"client process {i} exited before {expect!r}") from None
            if msg[0] == "error":
                raise ChildFailed(f"client process {i}: {msg[1]}")
            if msg[0] != expect:
                raise ChildFailed(f"client process {i}: expected {expect!r}, got {msg[0]!r}")
            out[i] = msg[1]
            del pending[i]
        if hooks is not None and counters is not None:
            hooks.tick(time.monotonic() - t_start, sum(counters[k] for k in range(len(conns))))
    return out


def child_main(job: ChildJob, conn, counters) -> None:
    """Entry point of a client process."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_child(job, conn, counters))
    else:
        uvloop.run(_child(job, conn, counters))


async def _child(job: ChildJob, conn, counters) -> None:
    import grpc

    from bench.roles import make_role

    loop = asyncio.get_running_loop()
    channels = [
        grpc.aio.insecure_channel(
            job.target,
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                # a local subchannel pool gives each channel its own TCP
                # connection, as clientv3 gets with several clients
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        for _ in range(max(1, job.settings.channels))
    ]
    try:
        role = make_role(job, channels, counters)
        await role.prepare()
        conn.send(("ready", None))
        msg = await loop.run_in_executor(None, _recv, conn, PREPARE_TIMEOUT_S)
        if msg is None or msg[0] != "go":
            return
        result = await role.run(msg[1], msg[2])
        conn.send(("done", result))
        if job.settings.cleanup:
            await asyncio.wait_for(role.cleanup(), CLEANUP_TIMEOUT_S)
            conn.send(("cleaned", None))
    except BaseException as e:  # report anything, so the parent never waits blind
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        try:
            conn.send(("error", text[-2000:]))
        except OSError:
            pass
    finally:
        for ch in channels:
            await ch.close()


def _recv(conn, timeout: float):
    return conn.recv() if conn.poll(timeout) else None
