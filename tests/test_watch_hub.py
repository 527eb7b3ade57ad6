"""The watch hub in-process, on the memory engine: fan-out, the key-range
index, history and engine replay, slow streams caught up, compaction,
progress, fragments. The gRPC service is covered by test_watch_differential."""
from __future__ import annotations

import asyncio
import random

from brain.apply.txn import apply_delete, apply_put, apply_txn
from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.mvcc.store import MVCCStore
from brain.watch import WatchHub
from brain.watch.event import WatchEvent
from brain.watch.watcher import Watcher
from brain.watch.watcher_group import WatcherGroup
from engines import open_engine


class FakeHeader:
    cluster_id = 11
    member_id = 22
    raft_term = 1

    def fill_without_revision(self, h) -> None:
        h.cluster_id, h.member_id, h.raft_term = self.cluster_id, self.member_id, self.raft_term

    def fill(self, h) -> None:
        self.fill_without_revision(h)


def run(coro):
    return asyncio.run(coro)


async def open_hub(**options) -> tuple[MVCCStore, WatchHub]:
    store = await MVCCStore.open(open_engine("memory"), sync=False)
    return store, WatchHub(store, FakeHeader(), **options)


async def put(store: MVCCStore, key: bytes, value: bytes) -> int:
    resp = await store.write(lambda txn: apply_put(txn, pb.PutRequest(key=key, value=value)))
    return resp.header.revision


async def delete(store: MVCCStore, key: bytes, end: bytes = b"") -> int:
    resp = await store.write(lambda txn: apply_delete(txn, pb.DeleteRangeRequest(key=key, range_end=end)))
    return resp.header.revision


async def txn_puts(store: MVCCStore, pairs: list[tuple[bytes, bytes]]) -> int:
    req = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in pairs])
    resp = await store.write(lambda txn: apply_txn(txn, req))
    return resp.header.revision


def create(stream, key: bytes, end: bytes = b"", **kw) -> None:
    stream.handle(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=end, **kw)))


def drain(stream) -> list[pb.WatchResponse]:
    out = []
    while True:
        item = stream.outbox.pop()
        if item is None:
            return out
        for raw in [item] if isinstance(item, bytes) else item:
            out.append(pb.WatchResponse.FromString(raw))


async def settle(hub: WatchHub) -> None:
    """Let catch-up tasks run until none has work left."""
    for _ in range(200):
        await asyncio.sleep(0)
        if not any(s.unsynced and not s.outbox.congested for s in hub.streams.values()):
            await asyncio.sleep(0)
            return


def events_of(resps: list[pb.WatchResponse], wid: int | None = None) -> list[tuple]:
    out = []
    for r in resps:
        if wid is not None and r.watch_id != wid:
            continue
        for e in r.events:
            out.append((r.watch_id, e.type, e.kv.key, e.kv.mod_revision, e.kv.value,
                        e.prev_kv.value if e.HasField("prev_kv") else None))
    return out


# -- the key-range index --------------------------------------------------------


def test_watcher_group_matches_like_brute_force():
    rnd = random.Random(7)
    alphabet = [b"a", b"b", b"c", b"\x00", b"\xff"]

    def rkey() -> bytes:
        return b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 3)))

    group = WatcherGroup()
    watchers: list[Watcher] = []
    for i in range(300):
        key = rkey()
        kind = rnd.random()
        end = None if kind < 0.3 else (b"" if kind < 0.45 else rkey())
        if end and end <= key:
            end = key + b"\x00"
        w = Watcher(i, key, end, None, 0, 0)  # type: ignore[arg-type]
        watchers.append(w)
        group.add(w)
        if rnd.random() < 0.2:  # churn: the lazily rebuilt index must follow
            victim = rnd.choice(watchers)
            if victim in group:
                group.remove(victim)
        if i % 25 == 0:
            events = [WatchEvent(j + 1, rkey(), b"v", None, False) for j in range(40)]
            got = group.match(events)
            members = [w for w in watchers if w in group]
            for e in events:
                want = {w for w in members if w.covers(e.key)}
                have = {w for s, evs in got.items() if e in evs for w in s.watchers}
                assert have == want, (e, want ^ have)


# -- live fan-out ------------------------------------------------------------------


def test_live_events_key_prefix_from_key_and_txns():
    async def main():
        store, hub = await open_hub()
        s = hub.open_stream()
        create(s, b"a")  # single key: id 0
        create(s, b"a", b"b", prev_kv=True)  # prefix "a": id 1
        create(s, b"b", b"\x00")  # from "b": id 2
        create(s, b"", b"\x00", filters=[pb.WatchCreateRequest.NOPUT])  # everything, deletes only: id 3
        created = drain(s)
        assert [(r.watch_id, r.created, r.header.revision) for r in created] == [(i, True, 1) for i in range(4)]
        await put(store, b"a", b"1")  # 2
        await txn_puts(store, [(b"ab", b"2"), (b"a", b"3"), (b"c", b"4")])  # 3
        await delete(store, b"a", b"b")  # 4: a and ab
        resps = drain(s)
        assert events_of(resps, 0) == [(0, 0, b"a", 2, b"1", None), (0, 0, b"a", 3, b"3", None), (0, 1, b"a", 4, b"", None)]
        assert events_of(resps, 1) == [
            (1, 0, b"a", 2, b"1", None), (1, 0, b"ab", 3, b"2", None), (1, 0, b"a", 3, b"3", b"1"),
            (1, 1, b"a", 4, b"", b"3"), (1, 1, b"ab", 4, b"", b"2"),
        ]
        assert events_of(resps, 2) == [(2, 0, b"c", 3, b"4", None)]
        assert events_of(resps, 3) == [(3, 1, b"a", 4, b"", None), (3, 1, b"ab", 4, b"", None)]
        for r in resps:
            assert r.header.cluster_id == 11 and r.header.member_id == 22 and r.header.raft_term == 1
        assert hub.watchers == 4 and len(hub.synced) == 4

    run(main())


def test_watchers_with_equal_options_share_event_bytes():
    async def main():
        store, hub = await open_hub()
        streams = [hub.open_stream() for _ in range(3)]
        for s in streams:
            for _ in range(2):
                create(s, b"/p/", b"/p0")
            drain(s)
        await txn_puts(store, [(b"/p/x", b"1" * 1000), (b"/p/y", b"2" * 1000)])
        chunks = [p.chunks[0] for s in streams for p in s.outbox.items]
        assert len(chunks) == 6
        assert all(c is chunks[0] for c in chunks)  # one encoding for six watchers

    run(main())


def test_cancel_ids_and_refusals():
    async def main():
        store, hub = await open_hub()
        s = hub.open_stream()
        create(s, b"k", watch_id=5)
        create(s, b"k")  # auto: 0
        create(s, b"k", watch_id=1)
        create(s, b"k")  # auto skips 1: 2
        create(s, b"k", watch_id=5)  # duplicate
        create(s, b"z", b"a")  # empty range
        create(s, b"k", start_revision=-1)
        resps = drain(s)
        assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in resps] == [
            (5, True, False, ""), (0, True, False, ""), (1, True, False, ""), (2, True, False, ""),
            (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
            (-1, True, True, "mvcc: watcher range is empty"),
            (-1, True, True, "etcdserver: mvcc: required revision has been compacted"),
        ]
        s.handle(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=1)))
        s.handle(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=99)))  # unknown: no answer
        resps = drain(s)
        assert [(r.watch_id, r.canceled, r.header.revision) for r in resps] == [(1, True, 1)]
        await put(store, b"k", b"v")
        assert sorted(r.watch_id for r in drain(s)) == [0, 2, 5]
        s.close()
        assert hub.watchers == 0 and len(hub.synced) == 0 and not hub.streams

    run(main())


# -- past revisions, history, the engine ---------------------------------------------


def test_start_revision_replays_from_history_then_goes_live():
    async def main():
        store, hub = await open_hub()
        for i in range(10):
            await put(store, b"k%d" % (i % 3), b"v%d" % i)  # revisions 2..11
        s = hub.open_stream()
        create(s, b"k", b"l", start_revision=5, prev_kv=True)
        await settle(hub)
        await put(store, b"k1", b"live")
        resps = drain(s)
        assert resps[0].created and resps[0].header.revision == 11
        evs = events_of(resps[1:])
        assert [e[3] for e in evs] == list(range(5, 13))
        assert evs[0] == (0, 0, b"k0", 5, b"v3", b"v0")
        assert evs[-1] == (0, 0, b"k1", 12, b"live", b"v7")
        assert hub.unsynced == 0 and len(hub.synced) == 1

    run(main())


def test_replay_from_engine_when_history_forgot():
    async def main():
        store, hub = await open_hub(history_events=5)
        await put(store, b"a", b"0")  # 2
        await txn_puts(store, [(b"a", b"1"), (b"b", b"1")])  # 3
        await delete(store, b"a")  # 4
        await put(store, b"a", b"2")  # 5: a create again
        for i in range(20):
            await put(store, b"c", b"%d" % i)  # 6..25
        assert hub.history.start_rev > 2
        s = hub.open_stream()
        create(s, b"a", b"d", start_revision=2, prev_kv=True)
        create(s, b"a", b"d", start_revision=2)
        create(s, b"c", start_revision=8, prev_kv=True)  # prev of its first event: an engine lookup
        await settle(hub)
        assert hub.engine_reads >= 1
        resps = drain(s)
        for wid in (0, 1):
            evs = events_of(resps, wid)
            assert [e[3] for e in evs] == [2, 3, 3, 4, 5] + list(range(6, 26))
            prevs = [e[5] for e in evs[:6]]
            if wid == 0:
                assert prevs == [None, b"0", None, b"1", None, None]
                assert evs[6][5] == b"0"  # c's second version
            else:
                assert prevs == [None] * 6
            assert [e[1] for e in evs[:5]] == [0, 0, 0, 1, 0]
        assert [(e[3], e[4], e[5]) for e in events_of(resps, 2)[:2]] == [(8, b"2", b"1"), (9, b"3", b"2")]

    run(main())


def test_compacted_start_revision_is_canceled_with_compact_revision():
    async def main():
        store, hub = await open_hub()
        for i in range(6):
            await put(store, b"k", b"%d" % i)  # 2..7
        await store.compact(5, physical=True)
        s = hub.open_stream()
        create(s, b"k", start_revision=4)
        create(s, b"k", start_revision=5, prev_kv=True)
        await settle(hub)
        resps = drain(s)
        compacted = [r for r in resps if r.canceled]
        assert len(compacted) == 1
        r = compacted[0]
        assert (r.watch_id, r.compact_revision, r.created, r.header.revision) == (0, 5, False, 0)
        # the event at the compact revision has no prev_kv (etcd reads it at rev-1)
        evs = events_of(resps, 1)
        assert [(e[3], e[5]) for e in evs] == [(5, None), (6, b"3"), (7, b"4")]
        # a compacted watcher keeps its id until canceled
        create(s, b"k")
        assert drain(s)[0].watch_id == 2
        s.handle(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0)))
        assert [(r.watch_id, r.canceled) for r in drain(s)] == [(0, True)]

    run(main())


def test_future_start_revision_waits():
    async def main():
        store, hub = await open_hub()
        s = hub.open_stream()
        create(s, b"k", start_revision=4)
        drain(s)
        s.request_progress()
        assert drain(s) == []  # the watcher's start is ahead of the store: no progress yet
        for i in range(4):
            await put(store, b"k", b"%d" % i)  # 2..5
        assert [e[3] for e in events_of(drain(s))] == [4, 5]
        s.request_progress()
        assert [(r.watch_id, r.header.revision) for r in drain(s)] == [(-1, 5)]

    run(main())


# -- slow streams ---------------------------------------------------------------------


def test_slow_stream_falls_behind_and_catches_up_exactly_once():
    async def main():
        store, hub = await open_hub(high_water=20_000, low_water=5_000, history_events=300)
        slow, fast = hub.open_stream(), hub.open_stream()
        for s in (slow, fast):
            create(s, b"/r/", b"/r0", prev_kv=True)
            create(s, b"/r/a", b"/r/b")
            drain(s)
        got_fast: list = []
        for i in range(600):
            await put(store, b"/r/%s%d" % (b"ab"[i % 2 : i % 2 + 1], i % 7), b"x" * 100)
            if i % 10 == 0:
                got_fast += drain(fast)  # the fast reader keeps up; the slow one reads nothing
        got_fast += drain(fast)
        assert slow.fell_behind and slow.unsynced and hub.unsynced == 2
        assert slow.outbox.queued_bytes < 40_000  # bounded while stalled
        assert hub.history.start_rev > 2  # and history moved on: the engine must fill in
        got_slow: list = []
        for _ in range(10_000):
            got_slow += drain(slow)
            await asyncio.sleep(0)
            if not slow.unsynced and not slow.outbox.items:
                break
        await put(store, b"/r/a", b"last")
        got_slow += drain(slow)
        got_fast += drain(fast)
        assert hub.unsynced == 0 and len(hub.synced) == 4
        assert hub.engine_reads > 0
        for got in (got_fast, got_slow):
            all0 = events_of(got, 0)
            assert [e[3] for e in all0] == list(range(2, 603))
            assert all(e[5] is not None for e in all0[14:-1])  # prev_kv, engine replay included
            assert [e[3] for e in events_of(got, 1)] == list(range(2, 603, 2))

    run(main())


# -- progress and fragments ----------------------------------------------------------


def test_progress_request_only_when_all_synced():
    async def main():
        store, hub = await open_hub()
        s = hub.open_stream()
        s.request_progress()
        assert drain(s) == []  # no watchers: nothing, as etcd 3.5
        for i in range(3):
            await put(store, b"k", b"%d" % i)  # 2..4
        create(s, b"k")
        create(s, b"k", start_revision=2)  # unsynced until its catch-up runs
        drain(s)
        s.request_progress()
        assert drain(s) == []
        await settle(hub)
        drain(s)
        s.request_progress()
        assert [(r.watch_id, r.header.revision, len(r.events)) for r in drain(s)] == [(-1, 4, 0)]

    run(main())


def test_periodic_progress_notify_skips_busy_watchers():
    async def main():
        store, hub = await open_hub(progress_interval=0.1)
        s = hub.open_stream()
        create(s, b"a", progress_notify=True)
        create(s, b"b", progress_notify=True)
        create(s, b"c")
        drain(s)
        await put(store, b"a", b"1")
        await asyncio.sleep(0.25)
        resps = drain(s)
        progress = [(r.watch_id, r.header.revision) for r in resps if not r.events]
        # watcher 0 had an event in the first interval: its first tick is elided
        assert (1, 2) in progress and progress.count((0, 2)) <= 1
        assert all(wid in (0, 1) for wid, _ in progress)
        await asyncio.sleep(0.25)
        progress = [(r.watch_id, r.header.revision) for r in drain(s) if not r.events]
        assert (0, 2) in progress and (1, 2) in progress

    run(main())


def test_fragments_split_big_responses():
    async def main():
        store, hub = await open_hub(fragment_limit=10_000)
        for i in range(8):
            await put(store, b"f%d" % i, bytes([65 + i]) * 3000)  # 2..9
        s = hub.open_stream()
        create(s, b"f", b"g", start_revision=2, fragment=True)
        create(s, b"f", b"g", start_revision=2)  # no fragment: one response
        await settle(hub)
        resps = drain(s)
        frag = [r for r in resps if r.watch_id == 0 and r.events]
        whole = [r for r in resps if r.watch_id == 1 and r.events]
        assert len(whole) == 1 and len(whole[0].events) == 8
        assert len(frag) == 3 and [r.fragment for r in frag] == [True, True, False]
        assert all(r.ByteSize() < 10_000 for r in frag)
        assert [e.kv.mod_revision for r in frag for e in r.events] == list(range(2, 10))

    run(main())


def test_history_is_bounded():
    async def main():
        store, hub = await open_hub(history_events=50, history_bytes=1 << 30)
        for i in range(30):
            await txn_puts(store, [(b"a%d" % i, b"v"), (b"b%d" % i, b"v"), (b"c%d" % i, b"v")])
        h = hub.history
        assert h.events <= 50 and h.events % 3 == 0  # whole revisions only
        assert h.start_rev == 31 - h.events // 3 + 1 and h.last_rev == 31
        events, hi = h.read(h.start_rev, 31, 2, 1 << 20)
        assert hi == h.start_rev + 1 and len(events) == 6

    run(main())


def test_event_bytes_parse_as_etcd_events():
    kv = kv_pb2.KeyValue(key=b"k" * 200, value=b"v" * 300, create_revision=3, mod_revision=9, version=4)
    prev = kv_pb2.KeyValue(key=b"k" * 200, value=b"p", create_revision=3, mod_revision=8, version=3)
    tomb = kv_pb2.KeyValue(key=b"k", mod_revision=10)
    for e in (
        WatchEvent(9, kv.key, kv.SerializeToString(), prev.SerializeToString(), False),
        WatchEvent(9, kv.key, kv.SerializeToString(), None, False),
        WatchEvent(10, b"k", tomb.SerializeToString(), prev.SerializeToString(), True),
    ):
        for with_prev in (False, True):
            r = pb.WatchResponse.FromString(e.frame(with_prev))
            want = kv_pb2.Event(type=kv_pb2.Event.DELETE if e.deleted else kv_pb2.Event.PUT, kv=kv_pb2.KeyValue.FromString(e.kv))
            if with_prev and e.prev is not None:
                want.prev_kv.CopyFrom(kv_pb2.KeyValue.FromString(e.prev))
            assert list(r.events) == [want]
            assert pb.WatchResponse(events=[want]).SerializeToString() == e.frame(with_prev)
            assert len(e.frame(True)) <= e.size <= len(e.frame(True)) + 20  # an upper bound of the framed size
