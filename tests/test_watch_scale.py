"""1,000 watchers on overlapping ranges under a steady write load, against a
real brain process: every watcher receives every matching event exactly
once, in order; one stream whose client stops reading for a while neither
slows the writer nor the other watchers, and gets everything once it reads
again.

The watchers live in three client processes (this file, run as a script):
one stream with 400 watches, 50 streams with 10 each, and one stream with
100 watches whose client stalls. The writer runs here; its log (revision,
key, type) gives what each watcher must receive. Each put's value starts
with its send time (time.monotonic(), one clock for every process on
Linux), so clients measure delivery lag.
"""
from __future__ import annotations

import asyncio
import os
import pickle
import random
import struct
import subprocess
import sys
import threading
import time

import grpc

from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = 10
KEYS_PER_GROUP = 100
VALUE_SIZE = 2048
WRITE_RATE = 100  # operations per second
WRITE_SECONDS = 5.0
STALL_AFTER = 1.0  # seconds after the writer starts
STALL_FOR = 2.5
_STAMP = struct.Struct("<d")

# (name, first watcher, watchers per stream, streams, stalls); the stalled
# client starts first, so that its stream is the server's stream 1
CLIENTS = [("stalled", 900, 100, 1, True), ("one-stream", 0, 400, 1, False), ("many-streams", 400, 10, 50, False)]
STALLED_FROM = 900


def key_of(g: int, k: int) -> bytes:
    return b"/s/%d/%02d" % (g, k)


def spec(i: int) -> dict:
    """Watcher i's create request fields: overlapping ranges of five forms,
    some with prev_kv and filters. The stalled client's watchers (900 and
    up) see every event with prev_kv: enough bytes to overflow what the
    transport and the server's outbox hold while it reads nothing."""
    if i >= STALLED_FROM:
        return dict(key=b"/s/", range_end=b"/s0", prev_kv=True)
    rnd = random.Random(i)
    g = rnd.randrange(GROUPS)
    form = i % 5
    if form == 0:
        f = dict(key=b"/s/", range_end=b"/s0")
    elif form == 1:
        f = dict(key=b"/s/%d/" % g, range_end=b"/s/%d0" % g)
    elif form == 2:
        f = dict(key=key_of(g, rnd.randrange(KEYS_PER_GROUP)))
    elif form == 3:
        f = dict(key=b"/s/%d/" % g, range_end=b"/s/%d/" % min(g + 2, 9) + b"\xff")
    else:
        f = dict(key=b"/s/%d/" % g, range_end=b"\x00")
    if rnd.random() < 0.4:
        f["prev_kv"] = True
    r = rnd.random()
    if r < 0.1:
        f["filters"] = [pb.WatchCreateRequest.NOPUT]
    elif r < 0.2:
        f["filters"] = [pb.WatchCreateRequest.NODELETE]
    return f


def matches(f: dict, key: bytes, deleted: bool) -> bool:
    filters = f.get("filters", [])
    if (deleted and pb.WatchCreateRequest.NODELETE in filters) or (not deleted and pb.WatchCreateRequest.NOPUT in filters):
        return False
    end = f.get("range_end", b"")
    if not end:
        return key == f["key"]
    return f["key"] <= key and (end == b"\x00" or key < end)


# -- the client processes -------------------------------------------------------------


async def _client(endpoint: str, first: int, per_stream: int, streams: int, stalls: bool, out: str) -> None:
    loop = asyncio.get_running_loop()
    stdin = lambda: loop.run_in_executor(None, sys.stdin.readline)  # noqa: E731
    ch = grpc.aio.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", -1)])
    stub = rpc_pb2_grpc.WatchStub(ch)
    calls = []
    received: dict[int, list] = {}
    watcher_of: list[dict[int, int]] = []
    n = first
    for _ in range(streams):
        call = stub.Watch()
        ids: dict[int, int] = {}
        for _ in range(per_stream):
            await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(**spec(n))))
            r = await call.read()
            assert r.created and not r.canceled, r
            ids[r.watch_id] = n
            received[n] = []
            n += 1
        calls.append(call)
        watcher_of.append(ids)
    print("ready", flush=True)
    go = float((await stdin()).split()[1])
    lags: list[float] = []
    progress: list[int] = [0] * len(calls)
    stalled_at: list[float] = []

    async def read(s: int) -> None:
        call, ids = calls[s], watcher_of[s]
        while True:
            if stalls and not stalled_at and time.monotonic() >= go + STALL_AFTER:
                stalled_at.append(time.monotonic())
                await asyncio.sleep(STALL_FOR)  # read nothing: the server must cope
            r = await call.read()
            if r is grpc.aio.EOF:
                return
            now = time.monotonic()
            if r.watch_id == -1:
                progress[s] = max(progress[s], r.header.revision)
                continue
            got = received[ids[r.watch_id]]
            for e in r.events:
                update = e.type == 0 and e.kv.create_revision != e.kv.mod_revision
                got.append((e.kv.mod_revision, e.kv.key, e.type, e.HasField("prev_kv"), update))
                if e.type == 0 and not stalls:
                    sent = _STAMP.unpack_from(e.kv.value)[0]
                    lags.append((sent, now - sent))

    readers = [asyncio.create_task(read(s)) for s in range(len(calls))]
    end_rev = int((await stdin()).split()[1])
    # etcd 3.5 answers a progress request (watch id -1) only once every
    # watcher of the stream is synced, behind every event already queued:
    # an answer at end_rev means the stream has delivered everything
    deadline = time.monotonic() + 60
    for s, call in enumerate(calls):
        while progress[s] < end_rev and time.monotonic() < deadline:
            await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
            await asyncio.sleep(0.1)
    for c in calls:
        c.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    with open(out, "wb") as f:
        pickle.dump({"received": received, "lags": lags, "progress": progress, "stalled": bool(stalled_at)}, f)
    print("done", flush=True)


def client_main(argv: list[str]) -> None:
    endpoint, first, per_stream, streams, stalls, out = argv
    asyncio.run(_client(endpoint, int(first), int(per_stream), int(streams), stalls == "1", out))


# -- the test -----------------------------------------------------------------------------


class Writer:
    """Puts, deletes and small txns under /s/ at a steady rate; the log of
    what happened at each revision."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.log: list[tuple[int, bytes, bool]] = []  # (revision, key, deleted), change order
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.live: set[bytes] = set()
        self.rnd = random.Random(42)
        self.pad = b"x" * (VALUE_SIZE - _STAMP.size)

    def _value(self) -> bytes:
        return _STAMP.pack(time.monotonic()) + self.pad

    def _one(self) -> None:
        rnd = self.rnd
        roll = rnd.random()
        t0 = time.monotonic()
        if roll < 0.1 and self.live:
            key = rnd.choice(sorted(self.live))
            rev = self.kv.DeleteRange(pb.DeleteRangeRequest(key=key), timeout=10).header.revision
            self.live.discard(key)
            self.log.append((rev, key, True))
        elif roll < 0.2:
            keys = sorted({key_of(rnd.randrange(GROUPS), rnd.randrange(KEYS_PER_GROUP)) for _ in range(3)})
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=self._value())) for k in keys]
            rev = self.kv.Txn(pb.TxnRequest(success=ops), timeout=10).header.revision
            self.live.update(keys)
            self.log.extend((rev, k, False) for k in keys)
        else:
            key = key_of(rnd.randrange(GROUPS), rnd.randrange(KEYS_PER_GROUP))
            rev = self.kv.Put(pb.PutRequest(key=key, value=self._value()), timeout=10).header.revision
            self.live.add(key)
            self.log.append((rev, key, False))
        self.latencies.append((t0, time.monotonic() - t0))

    def run(self, start: float, seconds: float, rate: float) -> None:
        i = 0
        while True:
            due = start + i / rate
            if due >= start + seconds:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._one()
            i += 1


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else 0.0


def test_thousand_watchers_exactly_once_in_order_with_a_stalled_stream(brain, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    try:
        for name, first, per_stream, streams, stalls in CLIENTS:
            out = str(tmp_path / f"{name}.pickle")
            argv = [sys.executable, os.path.abspath(__file__), brain.endpoint, str(first), str(per_stream), str(streams),
                    "1" if stalls else "0", out]
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
            procs.append((name, p, out, first, per_stream * streams, stalls))
            if stalls:
                assert p.stdout.readline().strip() == "ready", name
        assert sum(count for *_, count, _ in procs) == 1000
        for name, p, _, _, _, stalls in procs:
            if not stalls:
                assert p.stdout.readline().strip() == "ready", name
        writer = Writer(brain.channel())
        start = time.monotonic() + 0.2
        for _, p, *_ in procs:
            p.stdin.write(f"go {start}\n")
            p.stdin.flush()
        thread = threading.Thread(target=writer.run, args=(start, WRITE_SECONDS, WRITE_RATE))
        thread.start()
        thread.join()
        end_rev = writer.log[-1][0]
        for _, p, *_ in procs:
            p.stdin.write(f"end {end_rev}\n")
            p.stdin.flush()
        for name, p, *_ in procs:
            assert p.stdout.readline().strip() == "done", name
            p.wait(30)
    finally:
        for _, p, *_ in procs:
            if p.poll() is None:
                p.kill()

    # every watcher: exactly the matching events, in order
    checked = 0
    lags: list[tuple[float, float]] = []  # (put sent, lag)
    for name, _, out, first, count, stalls in procs:
        with open(out, "rb") as f:
            res = pickle.load(f)
        assert all(r >= end_rev for r in res["progress"]), (name, res["progress"])
        if stalls:
            assert res["stalled"]
        lags += res["lags"]
        for n in range(first, first + count):
            f = spec(n)
            want = [(rev, key, 1 if deleted else 0) for rev, key, deleted in writer.log if matches(f, key, deleted)]
            got = res["received"][n]
            assert [(rev, key, t) for rev, key, t, _, _ in got] == want, (name, n, f)
            # with prev_kv, every update and every delete carries it; nothing else does
            wants_prev = bool(f.get("prev_kv"))
            assert all(has_prev == (wants_prev and (t == 1 or update)) for _, _, t, has_prev, update in got), (name, n)
            checked += 1
    assert checked == 1000

    # the stalled stream (the server's first) really fell behind, and was caught up
    assert "watch stream 1 is not keeping up" in brain.log_tail(200_000)
    # the writer kept its pace while the stream was stalled
    stall_from, stall_to = start + STALL_AFTER, start + STALL_AFTER + STALL_FOR
    during = [s for t, s in writer.latencies if stall_from <= t < stall_to]
    assert len(writer.latencies) >= 0.9 * WRITE_RATE * WRITE_SECONDS
    assert during and _percentile(during, 0.99) < 0.25, sorted(during)[-5:]
    # and the other watchers kept receiving as promptly as when no stream
    # is stalled: their lag during the stall is held against their own lag
    # outside it, not against a fixed bound (on a loaded 2-core machine
    # their lag varies several-fold from day to day, stall or no stall);
    # held up by the stalled stream, they would wait out the stall on top
    lag_during = [lag for sent, lag in lags if stall_from <= sent < stall_to]
    lag_outside = [lag for sent, lag in lags if not stall_from <= sent < stall_to]
    assert lag_during and lag_outside
    during_p99, outside_p99 = _percentile(lag_during, 0.99), _percentile(lag_outside, 0.99)
    assert during_p99 < 1.5 * outside_p99 + 0.5, (during_p99, outside_p99)


if __name__ == "__main__":
    client_main(sys.argv[1:])
