"""Events rebuilt from the engine, for revisions the memory history forgot.

The revision log (`e<rev>` -> keys changed at rev, in change order) says what
changed; each key's history record at rev is the new version, a tombstone
(version 0) for a delete, or LIVE when the version is the key's live one (it
is read from the index then). prev_kv is the key's newest history version
below rev, unless that is a tombstone; it is never LIVE (a version with a
newer one after it is stored in full).
"""
from __future__ import annotations

import asyncio

from brain.etcdpb import kv_pb2
from brain.mvcc import records as K
from brain.watch.event import WatchEvent
from engines.base import Snapshot

_parse_kv = kv_pb2.KeyValue.FromString
# Stored versions parsed into events per turn of the event loop.
PARSE_SLICE = 4096


async def read_events(
    snapshot: Snapshot, lo: int, hi: int, max_revs: int, with_prev: bool
) -> tuple[list[WatchEvent], int]:
    """Events of revisions lo..hi, at most max_revs revisions. Returns the
    events and the last revision covered. Without with_prev, events carry no
    previous version (nobody reading them asked for one)."""
    if lo > hi:
        return [], hi
    logs = await snapshot.scan(*K.events_range(lo, hi), limit=max_revs)
    covered = K.events_key_rev(logs[-1][0]) if len(logs) == max_revs else hi
    changed = K.decode_events(logs)
    values = await snapshot.batch_get([K.history_key(k, rev) for rev, k in changed])
    in_index = [i for i, raw in enumerate(values) if K.is_live_marker(raw)]
    if in_index:
        live = await K.read_live(snapshot, [changed[i][1] for i in in_index])
        for i, raw in zip(in_index, live):
            values[i] = raw
    out: list[WatchEvent] = []
    # the newest version read so far per key: the previous version of a
    # key's next event in this read, without another engine lookup
    latest: dict[bytes, bytes | None] = {}
    for i, ((rev, key), raw) in enumerate(zip(changed, values)):
        if i and not i % PARSE_SLICE:
            await asyncio.sleep(0)  # a big revision: parsed a slice per turn
        if raw is None:
            # pruned by compaction (a tombstone at the compact revision)
            continue
        kv = _parse_kv(raw)
        deleted = kv.version == 0
        prev: bytes | None = None
        if with_prev and not (not deleted and kv.create_revision == kv.mod_revision):
            if key in latest:
                prev = latest[key]
            else:
                prev = await K.read_version_at(snapshot, key, rev - 1)
        latest[key] = None if deleted else raw
        out.append(WatchEvent(rev, key, raw, prev, deleted))
    return out, covered
