"""`brain check A B`: compare two etcd-compatible endpoints key by key.

Both endpoints are read at one pinned revision each (--revision, or each
one's current revision) in pages of --page-size keys, and the two key-ordered
streams are walked in step as a merge, so only a page of each is in memory
however many keys there are. For every key the value, create_revision,
mod_revision, version and lease are compared; a key on one side only is a
difference too. Without --revision, the two current revisions are compared
as well: a migration that kept every key but not the revision counter would
still give clients different resourceVersions.

Either side may be a snapshot file instead of an endpoint: it is compared at
its own revision (give that as --revision).

Exit status: 0 equal, 1 different, 2 an endpoint could not be read.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Iterator

import click
import grpc

from brain.client import Endpoint
from brain.mvcc import records as K
from brain.snapshot.format import SnapshotError
from brain.etcdpb import kv_pb2, rpc_pb2, rpc_pb2_grpc
from engines.base import prefix_end

KeyValue = kv_pb2.KeyValue

# the fields compared, in the order differences are reported
FIELDS = ("value", "create_revision", "mod_revision", "version", "lease")
# bytes of a value shown in a difference; the rest is summarized
SHOWN_BYTES = 64


@dataclass(frozen=True, slots=True)
class Difference:
    key: bytes | None  # None: the stores themselves (their revisions)
    field: str
    a: object
    b: object


@dataclass(slots=True)
class Reader:
    """Paged, key-ordered reads of one endpoint's range at a pinned revision."""

    stub: rpc_pb2_grpc.KVStub
    key: bytes
    range_end: bytes
    page_size: int
    timeout: float

    def current_revision(self) -> int:
        resp = self.stub.Range(rpc_pb2.RangeRequest(key=self.key, range_end=self.range_end, count_only=True),
                               timeout=self.timeout)
        return resp.header.revision

    def walk(self, rev: int) -> Iterator[KeyValue]:
        start = self.key
        while True:
            resp = self.stub.Range(
                rpc_pb2.RangeRequest(key=start, range_end=self.range_end, revision=rev, limit=self.page_size),
                timeout=self.timeout)
            yield from resp.kvs
            if not resp.more or not resp.kvs:
                return
            start = resp.kvs[-1].key + b"\x00"


class SnapshotSource:
    """A snapshot file (`brain snapshot save`, `etcdctl snapshot save` from
    brain) as one side: its live keys at its own revision."""

    def __init__(self, path: str, key: bytes, range_end: bytes) -> None:
        from brain.snapshot.restore import status

        self.path = path
        self.revision = status(path).meta.revision  # checks the checksum first
        self.start, self.end = K.index_range(key, None if range_end == b"\x00" else range_end)

    def current_revision(self) -> int:
        return self.revision

    def walk(self, rev: int) -> Iterator[KeyValue]:
        from brain.snapshot.format import read_records

        if rev != self.revision:
            raise SnapshotRevisionError(f"{self.path} holds revision {self.revision} only, not {rev}: "
                                        f"compare with --revision {self.revision}")
        with open(self.path, "rb") as f:
            for batch in read_records(f):
                if not isinstance(batch, list):
                    return
                for key, value in batch:
                    if self.start <= key < self.end:
                        yield KeyValue.FromString(value)


class SnapshotRevisionError(Exception):
    pass


def compare(a: Iterator[KeyValue], b: Iterator[KeyValue]) -> Iterator[tuple[bytes, list[Difference]]]:
    """(key, its differences) for every key of either stream, in key order."""
    ka, kb = next(a, None), next(b, None)
    while ka is not None or kb is not None:
        if kb is None or (ka is not None and ka.key < kb.key):
            yield ka.key, [Difference(ka.key, "key", "present", "absent")]  # type: ignore[union-attr]
            ka = next(a, None)
        elif ka is None or kb.key < ka.key:
            yield kb.key, [Difference(kb.key, "key", "absent", "present")]
            kb = next(b, None)
        else:
            found = [Difference(ka.key, f, getattr(ka, f), getattr(kb, f)) for f in FIELDS if getattr(ka, f) != getattr(kb, f)]
            yield ka.key, found
            ka, kb = next(a, None), next(b, None)


def show(value: object, cut: bool = True) -> str:
    """A value as printed: bytes quoted (escaped when not text), long ones
    cut unless cut is false (keys are shown whole)."""
    if not isinstance(value, bytes):
        return str(value)
    head = value[:SHOWN_BYTES] if cut else value
    try:
        text = head.decode()
        shown = '"' + text.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    except UnicodeDecodeError:
        shown = repr(head)[1:]
    if len(head) < len(value):
        shown += f"... ({len(value)} bytes)"
    return shown


def _print(d: Difference) -> None:
    key = "(revision)" if d.key is None else show(d.key, cut=False)
    click.echo(f"{key}\t{d.field}\tA: {show(d.a)}\tB: {show(d.b)}")


@click.command("check")
@click.argument("endpoint_a")
@click.argument("endpoint_b")
@click.option("--revision", type=int, default=0, help="Revision to compare at (default: each endpoint's current revision).")
@click.option("--prefix", default="", help="Compare only the keys with this prefix.")
@click.option("--page-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Keys per range request.")
@click.option("--cacert", default="", help="Verify the endpoints' certificates with this CA bundle.")
@click.option("--cert", default="", help="Client TLS certificate.")
@click.option("--key", "key_file", default="", help="Client TLS key.")
@click.option("--command-timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
def check(endpoint_a: str, endpoint_b: str, revision: int, prefix: str, page_size: int,
          cacert: str, cert: str, key_file: str, command_timeout: float) -> None:
    """Compare the keys of two etcd or brain endpoints, A and B: value,
    create/mod revision, version and lease of every key. Prints each
    difference (key, field, A's value, B's value) and a summary; exits 0
    when they are equal, 1 when they differ, 2 when one cannot be read."""
    start = prefix.encode() if prefix else b"\x00"
    end = (prefix_end(start) or b"\x00") if prefix else b"\x00"
    channels: list[grpc.Channel] = []
    readers: list[Reader | SnapshotSource] = []
    try:
        for name in (endpoint_a, endpoint_b):
            if os.path.isfile(name):
                readers.append(SnapshotSource(name, start, end))
                continue
            ch = Endpoint.parse(name, cacert, cert, key_file).channel()
            channels.append(ch)
            readers.append(Reader(rpc_pb2_grpc.KVStub(ch), start, end, page_size, command_timeout))
        code = _run(readers, revision, (endpoint_a, endpoint_b))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    except (SnapshotError, SnapshotRevisionError, OSError) as e:
        click.echo(f"brain check: {e}", err=True)
        code = 2
    finally:
        for ch in channels:
            ch.close()
    sys.exit(code)


def _run(readers: list[Reader | SnapshotSource], revision: int, names: tuple[str, str]) -> int:
    side = 0
    revisions_differ = False
    try:
        if revision > 0:
            revs = [revision, revision]
        else:
            revs = []
            for side, r in enumerate(readers):  # noqa: B007 - side names the failing endpoint below
                revs.append(r.current_revision())
            revisions_differ = revs[0] != revs[1]
            if revisions_differ:
                _print(Difference(None, "revision", revs[0], revs[1]))
        keys = differing_keys = found = 0
        walks = [_Side(i, r.walk(rev)) for i, (r, rev) in enumerate(zip(readers, revs))]
        for _, diffs in compare(iter(walks[0]), iter(walks[1])):
            keys += 1
            if diffs:
                differing_keys += 1
                found += len(diffs)
                for d in diffs:
                    _print(d)
    except _SideError as e:
        return _fail(names[e.side], e.error)
    except grpc.RpcError as e:
        return _fail(names[side], e)
    at = f"revision {revs[0]}" if revs[0] == revs[1] else f"revisions {revs[0]} (A) and {revs[1]} (B)"
    if found == 0 and not revisions_differ:
        click.echo(f"equal: {keys} keys compared at {at}")
        return 0
    click.echo(f"different: {keys} keys compared at {at}; {found} differences in {differing_keys} keys"
               + (", and the revisions differ" if revisions_differ else ""))
    return 1


def _fail(name: str, e: grpc.RpcError) -> int:
    details = e.details() if hasattr(e, "details") else str(e)
    click.echo(f"brain check: {name}: {details}", err=True)
    return 2


class _SideError(Exception):
    def __init__(self, side: int, error: grpc.RpcError) -> None:
        super().__init__(str(error))
        self.side = side
        self.error = error


@dataclass(slots=True)
class _Side:
    """A walk that says which endpoint failed when a read fails."""

    side: int
    walk: Iterator[KeyValue]

    def __iter__(self) -> Iterator[KeyValue]:
        try:
            yield from self.walk
        except grpc.RpcError as e:
            raise _SideError(self.side, e) from None
