"""Acknowledged writes survive SIGKILL; revisions stay gap-free across it."""
from __future__ import annotations

import threading
import time

import grpc

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import brain_server


def _writer(endpoint: str, wid: int, acked: dict, stop: threading.Event) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        i = 0
        while not stop.is_set():
            key = f"w{wid}/{i:06d}".encode()
            try:
                if i % 3 == 2:  # kube-apiserver's create shape
                    t = rpc_pb2.TxnRequest(
                        compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, mod_revision=0)],
                        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v" * 64))],
                    )
                    rev = kv.Txn(t, timeout=5).header.revision
                else:
                    rev = kv.Put(rpc_pb2.PutRequest(key=key, value=b"v" * 64), timeout=5).header.revision
            except grpc.RpcError:
                return  # the server died: this request is unacknowledged
            acked[key] = rev
            i += 1


def test_acknowledged_writes_survive_sigkill(tmp_path):
    srv = brain_server(str(tmp_path)).start()
    acked: dict[bytes, int] = {}
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(srv.endpoint, w, acked, stop)) for w in range(16)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    srv.kill()  # SIGKILL mid-stream
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) > 200, "the writers should have been acknowledged many times"

    srv.start()
    try:
        with srv.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            resp = kv.Range(rpc_pb2.RangeRequest(key=b"w", range_end=b"x"), timeout=30)
            stored = {x.key: x.mod_revision for x in resp.kvs}
            for key, rev in acked.items():
                assert stored.get(key) == rev, f"acknowledged {key!r}@{rev} lost or changed: {stored.get(key)}"
            # every write is one key at one revision: revisions 2..N with no gap
            revs = sorted(stored.values())
            assert revs == list(range(2, resp.header.revision + 1))
            # and the store keeps serving, at the next revision
            put = kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"1"), timeout=5)
            assert put.header.revision == resp.header.revision + 1
    finally:
        srv.stop()


def test_clean_shutdown_keeps_everything(tmp_path):
    srv = brain_server(str(tmp_path)).start()
    with srv.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(50):
            kv.Put(rpc_pb2.PutRequest(key=b"k%02d" % i, value=b"%d" % i))
        kv.Compact(rpc_pb2.CompactionRequest(revision=20, physical=True))
    assert srv.stop() == 0  # SIGTERM: drain, flush, exit cleanly
    srv.start()
    try:
        with srv.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            resp = kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"))
            assert resp.count == 50 and resp.header.revision == 51
            try:
                kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l", revision=19))
                raise AssertionError("revision 19 should be compacted")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.OUT_OF_RANGE
                assert e.details() == "etcdserver: mvcc: required revision has been compacted"
            assert kv.Range(rpc_pb2.RangeRequest(key=b"k00", revision=20)).kvs[0].value == b"0"
    finally:
        srv.stop()


def test_sigterm_ends_open_watch_streams_at_once(tmp_path):
    """Watch streams never end by themselves; a SIGTERM ends them instead of
    waiting out the shutdown grace period (etcd stops at once too), and the
    writes acknowledged before it are kept."""
    srv = brain_server(str(tmp_path)).start()
    ch = srv.channel()
    try:
        watch = rpc_pb2_grpc.WatchStub(ch)
        # the client half-closes after its one request; the stream goes on
        stream = watch.Watch(iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w"))]), timeout=60)
        assert next(stream).created
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Put(rpc_pb2.PutRequest(key=b"w", value=b"1"))
        assert next(stream).events[0].kv.value == b"1"
        t0 = time.monotonic()
        assert srv.stop() == 0
        took = time.monotonic() - t0
        assert took < 3, f"SIGTERM took {took:.1f} s with a watch stream open"
    finally:
        ch.close()
    srv.start()
    try:
        with srv.channel() as c:
            assert rpc_pb2_grpc.KVStub(c).Range(rpc_pb2.RangeRequest(key=b"w")).kvs[0].value == b"1"
    finally:
        srv.stop()


def _load(kv, n: int, tag: bytes) -> int:
    for i in range(0, n, 100):
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"big/%06d" % j, value=tag + b"x" * 1024))
            for j in range(i, min(i + 100, n))
        ]
        rev = kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30).header.revision
    return rev


def test_a_big_delete_range_killed_midway_lands_whole_or_not_at_all(tmp_path):
    """SIGKILL at points through a DeleteRange of 20,000 keys (whose copies of
    the deleted versions go to the engine ahead of its own batch): after the
    restart the delete is either wholly there at the next revision or not
    there at all, and every version before it still reads back."""
    n = 20_000
    srv = brain_server(str(tmp_path)).start()
    outcomes = []
    try:
        for round_, delay in enumerate((0.05, 0.2, 0.4, 0.8)):
            tag = b"r%d-" % round_
            with srv.channel() as ch:
                loaded = _load(rpc_pb2_grpc.KVStub(ch), n, tag)
            threading.Thread(
                target=lambda: _delete_quietly(srv.endpoint), daemon=True,
            ).start()
            time.sleep(delay)
            srv.kill()
            srv.start()
            with srv.channel() as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                now = kv.Range(rpc_pb2.RangeRequest(key=b"big/", range_end=b"big0", count_only=True), timeout=30)
                if now.header.revision == loaded:
                    assert now.count == n
                    outcomes.append("not applied")
                else:
                    assert now.header.revision == loaded + 1 and now.count == 0
                    outcomes.append("applied")
                old = kv.Range(rpc_pb2.RangeRequest(key=b"big/", range_end=b"big0", revision=loaded), timeout=30)
                assert len(old.kvs) == n and all(x.value == tag + b"x" * 1024 for x in old.kvs)
                if now.count:  # the next round loads over an empty range
                    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=60)
    finally:
        srv.stop()
    print("outcomes:", outcomes)


def _delete_quietly(endpoint: str) -> None:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=60)
    except grpc.RpcError:
        pass  # killed before it answered
