"""python -m tests.tikv_fake --pd-port P --tikv-port T [--data FILE]

Runs the fake PD + TiKV until SIGTERM/SIGINT. Port 0 picks a free port.
Once both ports serve, one line goes to stdout:

    ready pd=127.0.0.1:P tikv=127.0.0.1:T

so that a parent process can wait for it and read the ports. --data keeps
the cluster's data in a sqlite file that survives restarts; without it,
everything is in memory.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .server import serve


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.tikv_fake", description="a fake PD + TiKV for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pd-port", type=int, default=2379)
    parser.add_argument("--tikv-port", type=int, default=20160)
    parser.add_argument("--data", default=":memory:", help="sqlite file (default: in memory)")
    parser.add_argument("--stall-commit", action="append", default=[], metavar="KEY",
                        help="never answer a KvCommit of KEY (for tests that kill a client mid-commit)")
    parser.add_argument("--advertise-caller-host", action="store_true",
                        help="give each loopback client its own address (with the fake's ports) as PD's and the store's, "
                             "so that a test can put a proxy there")
    parser.add_argument("--die-on-commit-of", default="", metavar="SUBSTRING",
                        help="exit at once when the first KvCommit of a transaction that prewrote a key containing "
                             "SUBSTRING arrives (for tests of a commit whose outcome the client cannot know)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started it dies (tests: no fake outlives a killed pytest)")
    parser.add_argument("--log-rpcs", action="store_true", help="log every RPC to stderr")
    return parser.parse_args(argv)


async def run(ns: argparse.Namespace) -> None:
    stall = frozenset(k.encode() for k in ns.stall_commit)
    servers, cluster = await serve(ns.data, ns.host, ns.pd_port, ns.tikv_port, stall, ns.advertise_caller_host,
                                   ns.die_on_commit_of.encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ns.exit_with_parent:
        asyncio.create_task(_watch_parent(os.getppid(), stop))
    print(f"ready pd={cluster.pd_address} tikv={cluster.tikv_address}", flush=True)
    await stop.wait()
    for server in servers:
        await server.stop(grace=0.5)
    cluster.store.close()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:  # re-parented once the parent is gone
        await asyncio.sleep(0.5)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if ns.log_rpcs:
        logging.getLogger("tikv_fake").setLevel(logging.DEBUG)
    asyncio.run(run(ns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
