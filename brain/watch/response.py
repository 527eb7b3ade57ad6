"""WatchResponse bytes.

Event responses are assembled from parts: the header field (encoded once per
revision and reused), the watcher's watch_id field (encoded once per watcher)
and the events' bytes (encoded once per commit, per key range and per option
variant, shared by every watcher with that range and those options). Control
responses (created, canceled, progress, compacted) are rare and built as
protobuf messages.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from brain.etcdpb import rpc_pb2
from brain.watch.event import WatchEvent
from brain.watch.watcher import FRAGMENT, NO_DELETE, NO_PUT, PREV_KV
from brain.wire import bytes_field
from brain.wire.tags import WATCH_RESPONSE_FRAGMENT_TRUE, WATCH_RESPONSE_HEADER


class HeaderSource(Protocol):
    """What fills response headers (brain.server.header.Header)."""

    cluster_id: int
    member_id: int
    raft_term: int

    def fill(self, h) -> None: ...

    def fill_without_revision(self, h) -> None: ...


def select_events(events: Sequence[WatchEvent], variant: int, compact_rev: int) -> tuple[list[bytes], int]:
    """The bytes of the events a watcher of this variant is sent: parts to
    join, and their total size. Fragmenting watchers get one part per event
    (so a big response can be cut between events); others get one part.

    prev_kv follows etcd, which reads it at the event's revision - 1: an
    event at the compact revision gets none (that read is compacted)."""
    want_prev = variant & PREV_KV
    if variant & NO_PUT or variant & NO_DELETE:
        # filtered once here; the usual watcher has no filter and skips this
        # indexed by e.deleted: whether puts, then deletes, are filtered out
        dropped = bool(variant & NO_PUT), bool(variant & NO_DELETE)
        events = [e for e in events if not dropped[e.deleted]]
    if not variant & FRAGMENT:
        parts: list[bytes] = []
        add = parts.append
        for e in events:
            if not e.head:
                e.framed()
            if want_prev and e.prev is not None and e.rev > compact_rev:
                add(e.head_prev)
                add(e.kv)
                add(e.prev_head)
                add(e.prev)
            else:
                add(e.head)
                add(e.kv)
        if not parts:
            return parts, 0
        blob = b"".join(parts)
        return [blob], len(blob)
    frames = []
    for e in events:
        frames.append(e.frame(bool(want_prev) and e.rev > compact_rev))
    return frames, sum(map(len, frames))


class ResponseEncoder:
    def __init__(self, header: HeaderSource, fragment_limit: int) -> None:
        self.header = header
        # etcd splits a fragmenting watcher's response once it reaches this
        # size (its max request bytes plus gRPC overhead)
        self.fragment_limit = fragment_limit
        self._header_rev = -1
        self._header_field = b""

    def header_field(self, rev: int) -> bytes:
        if rev != self._header_rev:
            h = rpc_pb2.ResponseHeader(revision=rev)
            self.header.fill_without_revision(h)
            self._header_field = bytes_field(WATCH_RESPONSE_HEADER, h.SerializeToString())
            self._header_rev = rev
        return self._header_field

    def events(self, id_field: bytes, rev: int, chunks: list[bytes]) -> bytes:
        return b"".join([self.header_field(rev), id_field, *chunks])

    def fragments(self, id_field: bytes, rev: int, frames: list[bytes]) -> list[bytes]:
        """etcd's sendFragments: below the limit, or one event, goes whole;
        otherwise pieces marked fragment (all but the last), each filled
        until one more event would reach the limit (at least one event)."""
        head = self.header_field(rev) + id_field
        total = len(head) + sum(map(len, frames))
        limit = self.fragment_limit
        if total < limit or len(frames) < 2:
            return [b"".join([head, *frames])]
        fhead = head + WATCH_RESPONSE_FRAGMENT_TRUE
        out: list[bytes] = []
        i = 0
        n = len(frames)
        while i < n:
            size = len(fhead) + len(frames[i])
            j = i + 1
            while j < n and size + len(frames[j]) < limit:
                size += len(frames[j])
                j += 1
            out.append(b"".join([fhead if j < n else head, *frames[i:j]]))
            i = j
        return out

    def control(
        self,
        watch_id: int,
        *,
        rev: int = 0,
        created: bool = False,
        canceled: bool = False,
        cancel_reason: str = "",
        compact_revision: int = 0,
    ) -> bytes:
        """A response without events. rev 0 leaves header.revision 0 (etcd's
        compacted response carries none)."""
        r = rpc_pb2.WatchResponse(
            watch_id=watch_id, created=created, canceled=canceled,
            cancel_reason=cancel_reason, compact_revision=compact_revision,
        )
        r.header.revision = rev
        self.header.fill_without_revision(r.header)
        return r.SerializeToString()
