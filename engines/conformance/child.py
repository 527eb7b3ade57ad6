"""Helper processes for the conformance checks that need a second process.

    python -m engines.conformance.child MODE TARGET_JSON SLOT

MODE is one of:
- atomic-writer: an endless stream of large multi-key batches (killed by the
  parent with SIGKILL part-way through one);
- durable-writer: an endless stream of synced batches, printing the id of each
  one after write() returned (the parent kills it, reopens the engine and
  checks every acknowledged id);
- try-open: open the engine and report, as one JSON line, whether that worked
  or which error it raised (the parent holds the data directory's lock).

Lines go to stdout with os.write: unbuffered, and each line is one write()
no longer than PIPE_BUF, so the parent never reads half an acknowledgement.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

from engines.base import WriteBatch
from engines.conformance.target import EngineTarget

# atomic-writer layout: every batch rewrites all of ATOMIC_KEYS with its id
# (plus filler, so that one batch is large and its log write spans several
# system calls), moves the single ATOMIC_ONE key, and adds a done marker
ATOMIC_KEYS = 48
ATOMIC_FILLER = 4096
ATOMIC_PREFIX = b"atomic/"
# durable-writer layout: batch i puts DURABLE_KEYS keys durable/<i>/<j> = <i>
DURABLE_KEYS = 8
DURABLE_PREFIX = b"durable/"


def batch_id(i: int) -> bytes:
    return b"%010d" % i


def atomic_key(j: int) -> bytes:
    return ATOMIC_PREFIX + b"key/%03d" % j


def atomic_one(i: int) -> bytes:
    return ATOMIC_PREFIX + b"one/" + batch_id(i)


def atomic_done(i: int) -> bytes:
    return ATOMIC_PREFIX + b"done/" + batch_id(i)


def durable_key(i: int, j: int) -> bytes:
    return DURABLE_PREFIX + batch_id(i) + b"/%02d" % j


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


async def atomic_writer(target: EngineTarget, slot: str) -> None:
    engine = target.open(slot)
    say("ready")
    filler = b"x" * ATOMIC_FILLER
    i = 0
    while True:
        wb = WriteBatch()
        value = batch_id(i) + b"|" + filler
        for j in range(ATOMIC_KEYS):
            wb.put(atomic_key(j), value)
        if i:
            wb.delete(atomic_one(i - 1))
        wb.put(atomic_one(i), b"")
        wb.put(atomic_done(i), b"")
        await engine.write(wb, sync=False)
        say(str(i))
        i += 1


async def durable_writer(target: EngineTarget, slot: str) -> None:
    engine = target.open(slot)
    say("ready")
    i = 0
    while True:
        wb = WriteBatch()
        for j in range(DURABLE_KEYS):
            wb.put(durable_key(i, j), batch_id(i))
        await engine.write(wb, sync=True)
        say(str(i))  # acknowledged: write() returned
        i += 1


async def try_open(target: EngineTarget, slot: str) -> None:
    try:
        engine = target.open(slot)
    except Exception as e:
        say(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return
    await engine.close()
    say(json.dumps({"opened": True}))


MODES = {"atomic-writer": atomic_writer, "durable-writer": durable_writer, "try-open": try_open}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in MODES:
        print(f"usage: python -m engines.conformance.child {{{'|'.join(MODES)}}} TARGET_JSON SLOT", file=sys.stderr)
        return 2
    mode, target_json, slot = argv
    asyncio.run(MODES[mode](EngineTarget.from_json(target_json), slot))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
