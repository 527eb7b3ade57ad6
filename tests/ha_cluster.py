"""A brain cluster over the fake PD + TiKV (tests/tikv_fake) for the tests
of multi-instance brain: members started as real processes, clients over
real gRPC, a writer and a watcher in threads of their own, and the checks of
one gap-free revision sequence."""
from __future__ import annotations

import functools
import itertools
import signal
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
from tikv_fake.process import FakeTikvProcess

from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from servers import ServerProcess, brain_server

CALL_TIMEOUT = 25.0


def member(tmp_path: Path, fake: FakeTikvProcess, name: str, transport: str, pd_endpoint: str = "") -> ServerProcess:
    srv = brain_server(str(tmp_path), "--name", name, "--tikv-pd-endpoints", pd_endpoint or fake.pd_endpoint,
                       "--transport", transport, engine="tikv")
    srv.argv += ["--advertise-client-urls", srv.url]
    return srv


@contextmanager
def cluster(tmp_path: Path, fake: FakeTikvProcess, n: int = 3, transport: str = "h2") -> Iterator[list[ServerProcess]]:
    members = [member(tmp_path, fake, f"m{i}", transport) for i in range(n)]
    try:
        for m in members:
            m.start()
        yield members
    finally:
        for m in members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)  # a paused one must be able to stop
            m.stop()


@functools.lru_cache(maxsize=None)
def _channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint)


def channel(srv: ServerProcess) -> grpc.Channel:
    return _channel(srv.endpoint)


def kv(srv: ServerProcess) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(channel(srv))


def status(srv: ServerProcess) -> rpc_pb2.StatusResponse:
    return rpc_pb2_grpc.MaintenanceStub(channel(srv)).Status(rpc_pb2.StatusRequest(), timeout=5)


def wait_leader(members: list[ServerProcess], limit: float = 30.0, not_id: int = 0) -> tuple[int, float]:
    """The leader's member id once every given member names the same one
    (other than not_id), and how long that took."""
    start = time.monotonic()
    while True:
        try:
            leaders = {status(m).leader for m in members}
        except grpc.RpcError:
            leaders = set()
        if len(leaders) == 1 and 0 not in leaders and not_id not in leaders:
            return leaders.pop(), time.monotonic() - start
        assert time.monotonic() - start < limit, f"no agreed leader after {limit}s: {leaders}"
        time.sleep(0.1)


def member_list(srv: ServerProcess) -> list[rpc_pb2.Member]:
    return list(rpc_pb2_grpc.ClusterStub(channel(srv)).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members)


def by_id(members: list[ServerProcess], member_id: int) -> ServerProcess:
    for m in members:
        if status(m).header.member_id == member_id:
            return m
    raise AssertionError(f"no member {member_id:x}")


def put(srv: ServerProcess, key: str, value: str) -> int:
    return kv(srv).Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=CALL_TIMEOUT).header.revision


def get(srv: ServerProcess, key: str, serializable: bool = False) -> rpc_pb2.RangeResponse:
    return kv(srv).Range(rpc_pb2.RangeRequest(key=key.encode(), serializable=serializable), timeout=CALL_TIMEOUT)


def revisions(srv: ServerProcess, prefix: str) -> dict[str, int]:
    """key -> mod revision of every live key under prefix."""
    p = prefix.encode()
    resp = kv(srv).Range(rpc_pb2.RangeRequest(key=p, range_end=p[:-1] + bytes([p[-1] + 1])), timeout=CALL_TIMEOUT)
    return {x.key.decode(): x.mod_revision for x in resp.kvs}


@dataclass
class Watcher:
    """A gRPC watch on one member from a start revision: (revision, type, key) per event."""

    srv: ServerProcess
    prefix: str
    start_rev: int
    events: list[tuple[int, int, str]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Watcher:
        p = self.prefix.encode()
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=p, range_end=p[:-1] + bytes([p[-1] + 1]), start_revision=self.start_rev))

        def requests() -> Iterator[rpc_pb2.WatchRequest]:
            yield create
            self._stop.wait()

        def run() -> None:
            try:
                self._call = rpc_pb2_grpc.WatchStub(self.srv.channel()).Watch(requests())
                for resp in self._call:
                    for ev in resp.events:
                        self.events.append((ev.kv.mod_revision, ev.type, ev.kv.key.decode()))
            except grpc.RpcError as e:
                if not self._stop.is_set():
                    self.error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def wait_for(self, rev: int, limit: float = 30.0) -> list[tuple[int, int, str]]:
        deadline = time.monotonic() + limit
        while not self.events or self.events[-1][0] < rev:
            assert self.error is None, f"watch failed: {self.error}"
            assert time.monotonic() < deadline, f"watch saw up to {self.events[-1:]} of {rev}"
            time.sleep(0.05)
        return list(self.events)

    def stop(self) -> None:
        self._stop.set()
        call = getattr(self, "_call", None)
        if call is not None:
            call.cancel()


@dataclass
class Writer:
    """Puts of fresh keys, each through the next member; on an error the
    same write goes to the next member as a new key. Keeps the acknowledged
    (key, revision) pairs, and when each was acknowledged (monotonic)."""

    members: list[ServerProcess]
    prefix: str
    acked: list[tuple[str, int]] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Writer:
        def run() -> None:
            i = attempt = 0
            while not self._stop.is_set():
                srv = self.members[(i + attempt) % len(self.members)]
                key = f"{self.prefix}{i:05d}-{attempt}"
                try:
                    self.acked.append((key, put(srv, key, "v")))
                    self.acked_at.append(time.monotonic())
                    i += 1
                    attempt = 0
                except grpc.RpcError as e:
                    self.errors.append(f"{srv.port}: {e.code()} {e.details()}")
                    attempt += 1
                    time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def wait_acks(self, n: int, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} writes acknowledged: {self.errors[-5:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CALL_TIMEOUT * 2)


def first_ack_after(writers: list[Writer], moment: float) -> float:
    """Seconds from moment to the first write any writer had acknowledged
    after it."""
    after = [t for w in writers for t in list(w.acked_at) if t > moment]
    assert after, "no write acknowledged after the moment"
    return min(after) - moment


def first_write_after(members: list[ServerProcess], moment: float, key: str, limit: float = 60.0) -> float:
    """Puts of key through the given members in turn, each with a short
    deadline, until one is acknowledged: seconds from moment to that
    acknowledgement."""
    for i in itertools.count():
        try:
            kv(members[i % len(members)]).Put(rpc_pb2.PutRequest(key=key.encode(), value=b"x"), timeout=0.5)
            return time.monotonic() - moment
        except grpc.RpcError:
            assert time.monotonic() - moment < limit, "no write acknowledged"
            time.sleep(0.05)
    raise AssertionError("unreachable")


def metric(srv: ServerProcess, name: str) -> float:
    """One unlabelled figure from the member's /metrics (h2 transport)."""
    with urllib.request.urlopen(f"{srv.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def check_history(srv: ServerProcess, prefix: str, start_rev: int, acked: list[tuple[str, int]]) -> int:
    """Every revision after start_rev is exactly one stored key of the
    prefix (no gap, none used twice), every acknowledged write is there at
    its revision. Returns the last revision."""
    stored = revisions(srv, prefix)
    revs = sorted(stored.values())
    assert revs == list(range(start_rev + 1, start_rev + 1 + len(revs))), f"revisions not consecutive: {revs}"
    for key, rev in acked:
        assert stored.get(key) == rev, f"acknowledged {key} at {rev}, stored at {stored.get(key)}"
    return revs[-1]
