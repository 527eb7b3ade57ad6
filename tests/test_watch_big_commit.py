"""One revision that deletes 50,000 keys, fanned out by the watch hub a
slice per turn of the event loop (brain/watch/big_commit.py), with writes,
new watchers, a cancel and progress requests racing it. Every watcher must
get every matching event once and in order, each revision in one response
(fragments only for a fragmenting watcher), and the loop must keep serving
small writes while the big revision is fanned out.

The reference for each watcher is what brain's engine replay gives a
watcher of the same range and options started at the same revision, after
the fact (a separate path: stream.py's catch-up from replay.py)."""
from __future__ import annotations

import asyncio

from brain.etcdpb import rpc_pb2 as pb
from brain.watch.hub import WatchHub
from test_watch_hub import create, delete, drain, open_hub, put, run, settle, txn_puts

N = 50_000
NOPUT = pb.WatchCreateRequest.NOPUT
NODELETE = pb.WatchCreateRequest.NODELETE

# watch id -> (key, range_end, options)
KINDS: dict[int, tuple[bytes, bytes, dict]] = {
    1: (b"ev/", b"ev0", {}),
    2: (b"ev/", b"ev0", {"prev_kv": True}),
    3: (b"ev/0012345", b"", {"prev_kv": True}),
    4: (b"ev/", b"ev0", {"filters": [NOPUT]}),
    5: (b"ev/001", b"ev/002", {"filters": [NODELETE], "prev_kv": True}),
    6: (b"ev/", b"ev0", {"fragment": True, "prev_kv": True}),
    7: (b"\x00", b"\x00", {}),  # every key
}


def key(i: int) -> bytes:
    return b"ev/%07d" % i


def flat(resps: list[pb.WatchResponse], wid: int) -> list[tuple]:
    return [
        (e.type, e.kv.key, e.kv.mod_revision, e.kv.value, e.prev_kv.mod_revision if e.HasField("prev_kv") else 0)
        for r in resps if r.watch_id == wid for e in r.events
    ]


def revisions_whole(resps: list[pb.WatchResponse], wid: int) -> bool:
    """No revision's events start in one response and go on in another,
    fragments of one response taken as one."""
    last = 0
    continued = False  # the previous response was a fragment: this one goes on with it
    for r in resps:
        if r.watch_id != wid or not r.events:
            continue
        revs = [e.kv.mod_revision for e in r.events]
        if revs[0] == last and not continued:
            return False
        last = revs[-1]
        continued = r.fragment
    return True


async def reference(hub: WatchHub, start: int, wid: int, stop_rev: int) -> list[tuple]:
    """The events a watcher of kind wid started at start gets from replay."""
    s = hub.open_stream()
    k, end, opts = KINDS[wid]
    create(s, k, end, watch_id=wid, start_revision=start, **opts)
    got: list[pb.WatchResponse] = []
    for _ in range(10_000):
        await settle(hub)
        got += drain(s)
        if not s.unsynced:
            break
    s.close()
    return [e for e in flat(got, wid) if e[2] <= stop_rev]


def test_a_50k_key_delete_range_reaches_every_watcher_once_in_order_while_the_loop_serves():
    async def scenario() -> None:
        # a small history: the references are replayed from the engine
        store, hub = await open_hub(history_events=1000, high_water=1 << 30)
        for i in range(0, N, 2000):
            await txn_puts(store, [(key(j), b"v%d" % j) for j in range(i, i + 2000)])
        await put(store, b"other", b"o")
        start = store.rev + 1
        s = hub.open_stream()
        for wid, (k, end, opts) in KINDS.items():
            create(s, k, end, watch_id=wid, **opts)
        late = hub.open_stream()  # watchers created while the fan-out runs
        asker = hub.open_stream()  # asks for progress while it runs
        create(asker, b"zz", watch_id=1)
        drain(asker)
        big = asyncio.ensure_future(delete(store, b"ev/", b"ev0"))
        writes_while_busy = 0
        reads_while_busy = 0

        async def reader() -> None:
            nonlocal reads_while_busy
            while not big.done() or hub.busy:
                await store.view.range(b"other", None)
                reads_while_busy += hub.busy
                await asyncio.sleep(0)

        reading = asyncio.ensure_future(reader())
        writes: list[asyncio.Future] = []

        def count_write(_: asyncio.Future) -> None:
            nonlocal writes_while_busy
            writes_while_busy += hub.busy
        created_late: dict[int, int] = {}
        canceled_at = 0
        progress_asked = -1
        past_late = False
        i = 0
        while not big.done() or hub.busy:
            await asyncio.sleep(0)
            if not hub.busy:
                continue
            i += 1
            for k, v in ((key(12345 if i % 2 else 12346 + i), b"late%d" % i), (b"other", b"o%d" % i)):
                writes.append(asyncio.ensure_future(put(store, k, v)))
                writes[-1].add_done_callback(count_write)
            if progress_asked < 0:
                asker.handle(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
                progress_asked = len(drain(asker))
            elif len(created_late) < 2:
                wid = 10 + i
                created_late[wid] = store.rev
                create(late, b"ev/", b"ev0", watch_id=wid, prev_kv=True)
            elif not past_late:
                # from a past revision: caught up, after the big one is out
                past_late = True
                create(late, b"ev/", b"ev0", watch_id=99, prev_kv=True, start_revision=start - 1)
            elif not canceled_at:
                canceled_at = store.rev
                s.handle(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=4)))
        del_rev = await big
        await reading
        await asyncio.gather(*writes)
        for j in range(3):
            await put(store, key(j), b"after")
        got: list[pb.WatchResponse] = []
        got_late: list[pb.WatchResponse] = []
        for _ in range(10_000):  # the client reads as the streams catch up
            await settle(hub)
            got += drain(s)
            got_late += drain(late)
            if not hub.busy and not any(st.unsynced for st in hub.streams.values()):
                break
        stop = store.rev
        # the loop turned while the big revision was fanned out: small writes
        # completed in between (counted, not timed)
        assert writes_while_busy >= 1 and reads_while_busy >= 8, (writes_while_busy, reads_while_busy)
        assert canceled_at and len(created_late) == 2 and past_late  # all raced the fan-out
        assert progress_asked == 0  # no progress for a revision not yet delivered
        asker.handle(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        assert [r.header.revision for r in drain(asker)] == [stop]  # once idle: answered
        for wid in KINDS:
            want = await reference(hub, start, wid, stop)
            mine = flat(got, wid)
            if wid == 4:  # canceled half way: a prefix of the stream, no revision in part
                assert mine == want[: len(mine)]
                revs = {e[2] for e in mine}
                assert not revs or all(sum(1 for e in want if e[2] == r) == sum(1 for e in mine if e[2] == r) for r in revs)
                continue
            assert mine == want, (wid, len(mine), len(want))
            assert any(e[2] == del_rev for e in mine) or wid == 5
            assert revisions_whole(got, wid), wid
        for wid, rev_at_create in created_late.items():
            # created after the delete was committed: starts after it
            want = await reference(hub, rev_at_create + 1, 2, stop)
            assert flat(got_late, wid) == want, wid
            assert all(e[2] > del_rev for e in want)
        assert flat(got_late, 99) == await reference(hub, start - 1, 2, stop)
        assert revisions_whole(got_late, 99)
        assert any(r.fragment for r in got if r.watch_id == 6)  # it was big enough to fragment
        hub.close()
        await store.close()

    run(scenario())



def test_a_stream_too_slow_for_the_big_revision_gets_it_once_by_catching_up():
    """A stream already congested when the big revision is fanned out has
    its watchers moved aside; they get that revision and the later ones
    from catch-up, each event once, in order, the big revision whole."""
    async def scenario() -> None:
        store, hub = await open_hub(history_events=1000, high_water=1, low_water=0, fanout_slice=1024)
        n = 20_000
        for i in range(0, n, 2000):
            await txn_puts(store, [(key(j), b"v%d" % j) for j in range(i, i + 2000)])
        start = store.rev + 1
        slow = hub.open_stream()
        for wid in (1, 2, 6):
            k, end, opts = KINDS[wid]
            create(slow, k, end, watch_id=wid, **opts)
        await put(store, key(1), b"congests")  # queued, not read: congested
        assert slow.outbox.congested
        big = asyncio.ensure_future(delete(store, b"ev/", b"ev0"))
        while not big.done() or hub.busy:
            await asyncio.sleep(0)
        await put(store, key(2), b"after")
        got: list[pb.WatchResponse] = []
        for _ in range(10_000):  # now the client reads
            await settle(hub)
            got += drain(slow)
            if not hub.busy and not slow.unsynced:
                break
        assert slow.fell_behind
        for wid in (1, 2, 6):
            want = await reference(hub, start, wid, store.rev)
            assert flat(got, wid) == want, wid
            assert revisions_whole(got, wid), wid
        hub.close()
        await store.close()

    run(scenario())


def test_a_commit_bigger_than_the_history_empties_it_and_later_ones_are_kept():
    from brain.watch.event import WatchEvent
    from brain.watch.history import EventHistory

    h = EventHistory(1, max_events=100)
    h.append([WatchEvent(1, b"a", b"kv", None, False)])
    big = [WatchEvent(2, b"k%d" % i, b"kv", None, True) for i in range(101)]
    h.append(big, sum(e.memory() for e in big))
    assert (h.start_rev, h.last_rev, h.events, h.bytes) == (3, 2, 0, 0)
    h.append([WatchEvent(3, b"b", b"kv", None, False)])
    events, hi = h.read(3, 3, 10, 1 << 20)
    assert [(e.rev, e.key) for e in events] == [(3, b"b")] and hi == 3 and h.start_rev == 3


def test_a_big_commit_fanned_out_past_the_history_bound_empties_the_history():
    """The fan-out of a commit stops gathering its events for the history
    once they are more than the history holds, and empties it instead."""
    from types import SimpleNamespace

    from brain.mvcc.kv import Change
    from brain.watch.big_commit import fan_out_in_slices
    from brain.watch.event import WatchEvent
    from brain.watch.history import EventHistory
    from brain.watch.watcher_group import WatcherGroup

    class Recording(EventHistory):
        """Records how many events each append was handed."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.appended: list[int] = []

        def append(self, events, nbytes=None) -> None:
            self.appended.append(len(events))
            super().append(events, nbytes)

    async def scenario() -> None:
        for n, kept in ((150, False), (90, True)):
            history = Recording(1, max_events=100)
            history.append([WatchEvent(1, b"a", b"kv", None, False)])
            hub = SimpleNamespace(history=history, synced=WatcherGroup())
            changes = [Change(2, b"k%03d" % i, b"kv", None, False) for i in range(n)]
            await fan_out_in_slices(hub, changes, 2, slice_size=40)  # type: ignore[arg-type]
            assert history.last_rev == 2
            if kept:
                assert history.events == 91 and history.start_rev == 1
                assert history.appended == [1, 90]
            else:
                assert history.events == 0 and history.start_rev == 3
                # the commit's events were not gathered to be handed over
                assert history.appended == [1]

    run(scenario())


def test_replay_of_a_big_revision_from_the_engine_lets_the_loop_turn():
    """Rebuilding a 20,000-key revision's events from the engine parses a
    slice per turn: a task running beside it gets turns (counted)."""
    from brain.watch.replay import read_events

    async def scenario() -> None:
        store, hub = await open_hub()
        for i in range(0, 20_000, 2000):
            await txn_puts(store, [(key(j), b"v") for j in range(i, i + 2000)])
        rev = await delete(store, b"ev/", b"ev0")
        turns = 0
        done = False

        async def beside() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(beside())
        await asyncio.sleep(0)
        start = turns
        events, hi = await read_events(store.view.snapshot, rev, rev, 10, False)
        done = True
        await t
        assert hi == rev and len(events) == 20_000 and all(e.deleted for e in events)
        assert turns - start >= 4, turns - start
        hub.close()
        await store.close()

    run(scenario())
