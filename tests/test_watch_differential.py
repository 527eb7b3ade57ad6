"""The Watch service against real etcd 3.5: the same writes and the same
watch requests to both, and per watch the same replies (created, canceled,
compacted, progress; cluster_id, member_id and raft_term cleared) and the
same events (type, kv, prev_kv), compared flattened: how events are framed
into responses may differ.

Both servers live for the whole module and get every write, so their
revisions stay equal; each test uses its own keys.
"""
from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import text_format

from brain.etcdpb import kv_pb2
from brain.etcdpb import rpc_pb2 as pb
from brain.etcdpb import rpc_pb2_grpc
from differential import normalize
from servers import ServerProcess, brain_server, etcd_server, free_port

SENTINEL_ID = 9999  # a watch on every stream, to know when it has caught up
SENTINEL_KEY = b"zz-sentinel"


def _start_both(*servers: ServerProcess) -> None:
    threads = [threading.Thread(target=s.start) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in servers:
        if s.proc is None or s.proc.poll() is not None:
            raise RuntimeError(f"{s.kind} did not start:\n{s.log_tail()}")


class Stream:
    """One Watch stream on one server, driven from the test's thread."""

    def __init__(self, srv: ServerProcess, channel: grpc.Channel) -> None:
        self.srv = srv
        self._requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        self.call = rpc_pb2_grpc.WatchStub(channel).Watch(iter(self._requests.get, None))
        self.seen: list[pb.WatchResponse] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for r in self.call:
                self.responses.put(r)
        except grpc.RpcError:
            pass

    def send(self, req: pb.WatchRequest) -> None:
        self._requests.put(req)

    def next(self, timeout: float = 10.0) -> pb.WatchResponse:
        r = self.responses.get(timeout=timeout)
        self.seen.append(r)
        return r

    def read_until(self, pred, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.next(max(0.01, deadline - time.monotonic()))):
            pass

    def quiet(self, period: float) -> None:
        """Read until nothing arrives for period seconds."""
        while True:
            try:
                self.next(period)
            except queue.Empty:
                return

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()


def create(**kw) -> pb.WatchRequest:
    return pb.WatchRequest(create_request=pb.WatchCreateRequest(**kw))


def cancel(wid: int) -> pb.WatchRequest:
    return pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=wid))


def progress() -> pb.WatchRequest:
    return pb.WatchRequest(progress_request=pb.WatchProgressRequest())


@dataclass(frozen=True)
class Told:
    """One thing a watch was told: a reply without events (ids cleared) or
    one event. Compared as a message; rendered as text only when read (a
    big revision is told as hundreds of thousands of events)."""

    kind: str  # "reply" or "event"
    msg: object

    def __str__(self) -> str:
        return f"{self.kind} " + text_format.MessageToString(self.msg, as_one_line=True)

    def __contains__(self, text: str) -> bool:
        return text in str(self)


def timeline(resps: list[pb.WatchResponse], wid: int) -> list[Told]:
    """What watch wid was told, in order: replies without events whole (ids
    cleared), events one by one (their framing and header dropped)."""
    out = []
    for r in resps:
        if r.watch_id != wid:
            continue
        if not r.events:
            out.append(Told("reply", normalize(r)))
            continue
        out.extend(Told("event", e) for e in r.events)
    return out


class Pair:
    """etcd and brain, written to alike, with streams opened alike."""

    def __init__(self, etcd: ServerProcess, brain: ServerProcess) -> None:
        self.servers = (etcd, brain)
        self.channels = [s.channel() for s in self.servers]
        self.kv = [rpc_pb2_grpc.KVStub(c) for c in self.channels]
        self.lease = [rpc_pb2_grpc.LeaseStub(c) for c in self.channels]

    def call(self, method: str, req, stub: str = "kv") -> list:
        out = [getattr(s, method)(req, timeout=10) for s in getattr(self, stub)]
        for o in out[1:]:
            assert normalize(o) == normalize(out[0]), f"{method}: etcd {out[0]} brain {o}"
        return out

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        return self.call("Put", pb.PutRequest(key=key, value=value, lease=lease))[0].header.revision

    def delete(self, key: bytes, end: bytes = b"") -> int:
        return self.call("DeleteRange", pb.DeleteRangeRequest(key=key, range_end=end))[0].header.revision

    def txn(self, *ops: pb.RequestOp) -> int:
        return self.call("Txn", pb.TxnRequest(success=list(ops)))[0].header.revision

    def rev(self) -> int:
        return self.call("Range", pb.RangeRequest(key=b"\x00", limit=1))[0].header.revision

    def streams(self) -> list[Stream]:
        out = []
        for srv, ch in zip(self.servers, self.channels):
            s = Stream(srv, ch)
            s.send(create(key=SENTINEL_KEY, watch_id=SENTINEL_ID))
            s.read_until(lambda r: r.created and r.watch_id == SENTINEL_ID)
            s.seen.clear()
            out.append(s)
        return out

    def send(self, streams: list[Stream], req: pb.WatchRequest) -> None:
        """Send req on both streams; for a create, wait for its created reply
        (what follows must not race with it)."""
        for s in streams:
            s.send(req)
            if req.HasField("create_request"):
                s.read_until(lambda r: r.created)

    def cancel(self, streams: list[Stream], wid: int) -> None:
        """Cancel wid on both streams and wait for the reply."""
        for s in streams:
            s.send(cancel(wid))
            s.read_until(lambda r: r.canceled and r.watch_id == wid)

    def sync(self, streams: list[Stream], quiet: float = 0.3) -> None:
        """Wait until both streams have sent everything so far: a write to
        the sentinel key comes back, then nothing more for a while (etcd
        catches up watchers of past revisions every 100 ms)."""
        rev = self.put(SENTINEL_KEY, b"x")
        for s in streams:
            s.read_until(lambda r: r.watch_id == SENTINEL_ID and any(e.kv.mod_revision == rev for e in r.events))
            s.quiet(quiet)

    def compare(self, streams: list[Stream], wids: list[int]) -> dict[int, list[Told]]:
        etcd, brain = streams
        out = {}
        for wid in wids:
            a, b = timeline(etcd.seen, wid), timeline(brain.seen, wid)
            assert a == b, f"watch {wid}\netcd:\n" + "\n".join(map(str, a)) + "\nbrain:\n" + "\n".join(map(str, b))
            out[wid] = a
        return out

    def close(self) -> None:
        for c in self.channels:
            c.close()


@pytest.fixture(scope="module", params=["grpcio", "h2"])
def pair(request, tmp_path_factory):
    """etcd and brain, brain on each of its gRPC servers."""
    tmp = str(tmp_path_factory.mktemp("watch"))
    etcd, brain = etcd_server(tmp), brain_server(tmp, "--transport", request.param)
    _start_both(etcd, brain)
    p = Pair(etcd, brain)
    yield p
    p.close()
    etcd.stop()
    brain.stop()


def put_op(key: bytes, value: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))


def del_op(key: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))


def test_live_events_for_every_range_form_filter_and_prev_kv(pair):
    streams = pair.streams()
    forms = [
        dict(key=b"/a/x"),  # 0: one key
        dict(key=b"/a/", range_end=b"/a0"),  # 1: prefix
        dict(key=b"/a/m", range_end=b"/b/z"),  # 2: [key, end)
        dict(key=b"/a/m", range_end=b"\x00"),  # 3: key and above
        dict(key=b"", range_end=b"\x00"),  # 4: everything
        dict(key=b"/a/", range_end=b"/a0", prev_kv=True),  # 5
        dict(key=b"/a/", range_end=b"/a0", prev_kv=True, filters=[pb.WatchCreateRequest.NOPUT]),  # 6
        dict(key=b"/a/", range_end=b"/a0", filters=[pb.WatchCreateRequest.NODELETE]),  # 7
        dict(key=b"/a/", range_end=b"/a0", filters=[pb.WatchCreateRequest.NOPUT, pb.WatchCreateRequest.NODELETE]),  # 8
        dict(key=b"/a/x", prev_kv=True, progress_notify=True, fragment=True),  # 9
    ]
    for f in forms:
        pair.send(streams, create(**f))
    pair.put(b"/a/x", b"1")
    pair.put(b"/a/x", b"2")
    pair.txn(put_op(b"/a/y", b"1"), put_op(b"/a/z", b"1"), put_op(b"/b/a", b"1"), put_op(b"/a/n", b"1"))
    pair.txn(del_op(b"/a/x"), put_op(b"/b/b", b"2"), put_op(b"/a/y", b"2"))
    pair.delete(b"/a/", b"/a0")
    pair.put(b"/a/x", b"again")
    pair.delete(b"/nothing")  # no revision, no event
    pair.sync(streams)
    seen = pair.compare(streams, list(range(len(forms))))
    assert len(seen[4]) > 10 and any("DELETE" in line for line in seen[6])
    for s in streams:
        s.close()


def test_lease_revoke_deletes_are_events_with_prev_kv(pair):
    grants = pair.call("LeaseGrant", pb.LeaseGrantRequest(ID=0x77, TTL=60), stub="lease")
    streams = pair.streams()
    pair.send(streams, create(key=b"/lease/", range_end=b"/lease0", prev_kv=True))
    pair.put(b"/lease/a", b"1", lease=grants[0].ID)
    pair.put(b"/lease/b", b"2", lease=grants[0].ID)
    pair.call("LeaseRevoke", pb.LeaseRevokeRequest(ID=0x77), stub="lease")
    pair.sync(streams)
    seen = pair.compare(streams, [0])
    assert sum("DELETE" in line for line in seen[0]) == 2


def test_replay_from_past_and_future_revisions(pair):
    first = pair.put(b"/p/a", b"1")
    pair.txn(put_op(b"/p/a", b"2"), put_op(b"/p/b", b"1"))
    pair.txn(del_op(b"/p/a"), put_op(b"/p/c", b"1"))
    pair.put(b"/p/a", b"3")
    cur = pair.rev()
    streams = pair.streams()
    starts = [first, first + 1, first + 2, cur, cur + 1, cur + 3]
    for start in starts:
        pair.send(streams, create(key=b"/p/", range_end=b"/p0", start_revision=start, prev_kv=True))
    pair.send(streams, create(key=b"/p/b", start_revision=first, filters=[pb.WatchCreateRequest.NODELETE]))
    pair.sync(streams)
    for i in range(4):
        pair.put(b"/p/b", b"live%d" % i)
    pair.sync(streams)
    seen = pair.compare(streams, list(range(len(starts) + 1)))
    assert len(seen[0]) == 1 + 6 + 4  # created, the replay, the live puts
    for s in streams:
        s.close()


def test_ids_refusals_and_cancel(pair):
    streams = pair.streams()
    for req in [
        create(key=b"/i/a", watch_id=5),
        create(key=b"/i/a"),  # 0
        create(key=b"/i/a", watch_id=1),
        create(key=b"/i/a"),  # 2: 1 is taken
        create(key=b"/i/a", watch_id=5),  # duplicate
        create(key=b"/i/z", range_end=b"/i/a"),  # empty range
        create(key=b"/i/a", watch_id=-7),
    ]:
        pair.send(streams, req)
    pair.sync(streams)
    pair.cancel(streams, 1)
    pair.send(streams, cancel(12345))  # unknown: no reply
    pair.sync(streams)
    pair.put(b"/i/a", b"v")
    pair.cancel(streams, 5)
    pair.sync(streams)
    pair.compare(streams, [5, 0, 1, 2, -1, -7, 12345])
    for s in streams:
        s.close()


def test_compacted_start_revision_and_prev_kv_at_the_compact_revision(pair):
    pair.put(b"/c/k", b"1")
    pair.put(b"/c/k", b"2")
    compact = pair.put(b"/c/k", b"3")
    pair.put(b"/c/k", b"4")
    pair.call("Compact", pb.CompactionRequest(revision=compact, physical=True))
    streams = pair.streams()
    pair.send(streams, create(key=b"/c/k", start_revision=compact - 1))  # 0: compacted
    pair.send(streams, create(key=b"/c/k", start_revision=compact, prev_kv=True))  # 1
    pair.send(streams, create(key=b"/c/k", start_revision=1))  # 2: compacted
    pair.sync(streams)
    pair.cancel(streams, 0)  # a compacted watch can still be canceled
    pair.sync(streams)
    seen = pair.compare(streams, [0, 1, 2])
    assert any("compact_revision" in line for line in seen[0])
    for s in streams:
        s.close()


def test_progress_request_when_synced(pair):
    streams = pair.streams()
    pair.send(streams, create(key=b"/g/a"))
    pair.send(streams, create(key=b"/g/", range_end=b"/g0", start_revision=pair.put(b"/g/a", b"1")))
    pair.sync(streams)
    pair.send(streams, progress())
    for s in streams:
        s.read_until(lambda r: r.watch_id == -1)
    pair.compare(streams, [-1, 0, 1])
    for s in streams:
        s.close()


def test_fragmented_responses(pair):
    # one revision whose events, with prev_kv, exceed the 2 MiB limit (1.5
    # MiB requests + gRPC overhead): a fragmenting watcher gets it in pieces
    big = 700 * 1024
    streams = pair.streams()
    pair.send(streams, create(key=b"/f/", range_end=b"/f0", prev_kv=True, fragment=True))
    pair.send(streams, create(key=b"/f/", range_end=b"/f0", prev_kv=True))
    first = pair.txn(put_op(b"/f/a", b"a" * big), put_op(b"/f/b", b"b" * big))
    pair.txn(put_op(b"/f/a", b"A" * big), put_op(b"/f/b", b"B" * big))
    pair.send(streams, create(key=b"/f/", range_end=b"/f0", start_revision=first, prev_kv=True, fragment=True))
    pair.sync(streams)
    pair.compare(streams, [0, 1, 2])
    for s in streams:
        for wid in (0, 2):
            pieces = [r for r in s.seen if r.watch_id == wid and r.events]
            assert any(r.fragment for r in pieces), s.srv.kind
            assert not pieces[-1].fragment, s.srv.kind
            assert all(r.ByteSize() < 2 * 1024 * 1024 or len(r.events) == 1 for r in pieces), s.srv.kind
        assert not any(r.fragment for r in s.seen if r.watch_id == 1)
        s.close()


# -- periodic progress notifications: servers with a short interval ------------------

_BRAIN_WITH_INTERVAL = """
import asyncio, sys
from brain.logs import setup_logging
from brain.server.config import ListenURL, ServerConfig
from brain.server.server import serve
setup_logging("info")
asyncio.run(serve(ServerConfig(
    data_dir=sys.argv[1], listen_client_urls=[ListenURL("http", "127.0.0.1", int(sys.argv[2]))],
    progress_notify_interval=float(sys.argv[3]),
)))
"""


def brain_with_progress_interval(tmp: str, seconds: float) -> ServerProcess:
    port = free_port()
    data = tempfile.mkdtemp(prefix="brain-", dir=tmp)
    argv = [sys.executable, "-c", _BRAIN_WITH_INTERVAL, data, str(port), str(seconds)]
    return ServerProcess("brain", argv, port, data, os.path.join(tmp, f"brain-{port}.log"))


def test_periodic_progress_notify(tmp_path):
    etcd = etcd_server(str(tmp_path), "--experimental-watch-progress-notify-interval=300ms")
    brain = brain_with_progress_interval(str(tmp_path), 0.3)
    _start_both(etcd, brain)
    p = Pair(etcd, brain)
    try:
        streams = p.streams()
        p.send(streams, create(key=b"/n/a", progress_notify=True))  # 0: quiet
        p.send(streams, create(key=b"/n/b", progress_notify=True))  # 1: busy
        p.send(streams, create(key=b"/n/c"))  # 2: no progress asked
        t0 = time.monotonic()
        rev = p.put(b"/n/x", b"1")
        stop = t0 + 1.4
        while time.monotonic() < stop:
            busy = p.put(b"/n/b", b"busy")
            time.sleep(0.05)
        p.sync(streams)
        elapsed = time.monotonic() - t0
        for s in streams:
            notes = [r for r in s.seen if not r.events and not r.created]
            quiet = [r for r in notes if r.watch_id == 0]
            # about one per interval for the quiet watcher: never more, and at
            # least half as many (etcd itself, on a loaded machine, has sent
            # 5 in 2.45 s)
            assert elapsed / 0.3 / 2 - 1 <= len(quiet) <= elapsed / 0.3 + 1, (s.srv.kind, elapsed, quiet)
            assert all(r.header.revision >= rev for r in quiet)
            # the busy watcher got events in every interval: no notification
            # until it fell quiet; the one that asked for none gets none
            assert all(r.header.revision >= busy for r in notes if r.watch_id == 1), s.srv.kind
            assert not [r for r in notes if r.watch_id == 2], s.srv.kind
            s.close()
    finally:
        p.close()
        etcd.stop()
        brain.stop()


def test_event_kv_decodes_as_mvccpb(pair):
    """The hand-assembled bytes parse with the generated classes, fields and all."""
    streams = pair.streams()
    pair.send(streams, create(key=b"/e/k", prev_kv=True))
    lease = pair.call("LeaseGrant", pb.LeaseGrantRequest(ID=0x99, TTL=60), stub="lease")[0].ID
    pair.put(b"/e/k", b"\x00\xff" * 100, lease=lease)
    pair.put(b"/e/k", b"")
    pair.sync(streams)
    seen = pair.compare(streams, [0])
    brain_events = [e for r in streams[1].seen if r.watch_id == 0 for e in r.events]
    assert brain_events[0].kv.lease == lease and brain_events[1].prev_kv.lease == lease
    assert brain_events[1].type == kv_pb2.Event.PUT and brain_events[1].kv.value == b""
    assert len(seen[0]) == 3
    for s in streams:
        s.close()


# -- --max-request-bytes: the Watch service's limits -----------------------------------

@pytest.mark.timeout(120)
def test_max_request_bytes_reaches_watch(tmp_path):
    """With --max-request-bytes 4 KiB, a response past 4 KiB + gRPC overhead
    (516 KiB) is split for a fragmenting watcher, on etcd and brain alike; a
    create request past that size is refused, one below it is served (the
    Watch service itself does not check request sizes)."""
    limit = 4096
    etcd = etcd_server(str(tmp_path), f"--max-request-bytes={limit}")
    brain = brain_server(str(tmp_path), f"--max-request-bytes={limit}")
    _start_both(etcd, brain)
    p = Pair(etcd, brain)
    try:
        streams = p.streams()
        # 200 events of 3 KB, replayed to watchers created after them: one
        # catch-up response of about 600 KB, under the default limit (2 MiB)
        first = p.put(b"/m/000", b"v" * 3000)
        for i in range(1, 200):
            p.put(b"/m/%03d" % i, b"v" * 3000)
        p.send(streams, create(key=b"/m/", range_end=b"/m0", start_revision=first, fragment=True))  # 0
        p.send(streams, create(key=b"/m/", range_end=b"/m0", start_revision=first))  # 1
        p.send(streams, create(key=b"/m/" + b"k" * (2 * limit)))  # 2: larger than the limit, served
        p.sync(streams)
        p.compare(streams, [0, 1, 2])
        for s in streams:
            pieces = [r for r in s.seen if r.watch_id == 0 and r.events]
            assert len(pieces) > 1 and all(r.fragment for r in pieces[:-1]) and not pieces[-1].fragment, s.srv.kind
            assert all(r.ByteSize() < limit + 512 * 1024 for r in pieces), s.srv.kind
            assert len([r for r in s.seen if r.watch_id == 1 and r.events]) == 1, s.srv.kind
            s.close()
        refused = []
        for ch in p.channels:
            huge = create(key=b"/m/" + b"k" * (limit + 512 * 1024))
            with pytest.raises(grpc.RpcError) as e:
                next(iter(rpc_pb2_grpc.WatchStub(ch).Watch(iter([huge]), timeout=10)))
            refused.append(e.value.code())
        # the code alike; the message is the gRPC server's own wording
        # (grpc-go's on etcd, "grpc: received message larger than max ...")
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, refused
    finally:
        p.close()
        etcd.stop()
        brain.stop()
