"""Paged lists, kube-apiserver style, compared with etcd 3.5: pages of a
prefix at a revision pinned by the first page (`limit`, continue from the
last key + "\\0", exact `count` of what is left), while other clients create,
update and delete keys of the same prefix between pages, and compaction
moves on. brain answers later pages from what the first page learnt of the
range (brain/mvcc/key_index.py); every page must still match etcd."""
from __future__ import annotations

import random

import pytest
from differential import Pair

from brain.etcdpb import rpc_pb2 as pb

PREFIX = b"/registry/pods/"
END = b"/registry/pods0"


def put(pair: Pair, key: bytes, value: bytes) -> int:
    return pair.both("Put", pb.PutRequest(key=key, value=value)).resp.header.revision


def page(pair: Pair, key: bytes, end: bytes, rev: int, limit: int, **extra) -> pb.RangeResponse:
    return pair.both("Range", pb.RangeRequest(key=key, range_end=end, revision=rev, limit=limit, **extra),
                     f"page from {key!r} at revision {rev}").resp


def paged_list(pair: Pair, rnd: random.Random, names: list[bytes], limit: int, end: bytes, churn: bool, **extra) -> list[bytes]:
    """One whole list; between pages, writes under the prefix (when churn)."""
    first = page(pair, PREFIX, end, 0, limit, **extra)
    rev = first.header.revision
    seen = [kv.key for kv in first.kvs]
    resp = first
    while resp.more:
        if churn:
            for _ in range(rnd.randrange(1, 6)):
                k = rnd.choice(names)
                what = rnd.random()
                if what < 0.5:
                    put(pair, k, b"v%d" % rnd.randrange(1000))
                elif what < 0.8:
                    pair.both("DeleteRange", pb.DeleteRangeRequest(key=k))
                else:
                    put(pair, PREFIX + b"new-%d" % rnd.randrange(10**6), b"n")
        nxt = seen[-1] + b"\x00"
        # the same page also as count_only and keys_only, as clients do
        page(pair, nxt, end, rev, limit, count_only=True)
        resp = page(pair, nxt, end, rev, limit, **extra)
        seen += [kv.key for kv in resp.kvs]
    assert len(seen) == len(set(seen)) == first.count
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_paged_lists_under_churn_match_etcd(etcd, brain, seed):
    rnd = random.Random(seed)
    with etcd.channel() as ce, brain.channel() as cb:
        pair = Pair(ce, cb)
        names = [PREFIX + b"ns%d/pod-%03d" % (i % 3, i) for i in range(120)]
        for k in names:
            put(pair, k, b"0" * rnd.randrange(1, 64))
        put(pair, b"/registry/pods", b"below")  # just outside, on both sides
        put(pair, END, b"above")
        for limit in (1, 7, 50):
            paged_list(pair, rnd, names, limit, END, churn=False)
            paged_list(pair, rnd, names, limit, END, churn=True)
            paged_list(pair, rnd, names, limit, END, churn=True, keys_only=True)
            paged_list(pair, rnd, names, limit, b"\x00", churn=True)  # from-key: no upper bound
        # a list pinned at a revision that compaction then removes
        first = page(pair, PREFIX, END, 0, 10)
        for _ in range(3):
            put(pair, rnd.choice(names), b"x")
        cur = page(pair, b"/", b"", 0, 1).header.revision
        pair.both("Compact", pb.CompactionRequest(revision=cur))
        page(pair, first.kvs[-1].key + b"\x00", END, first.header.revision, 10)  # compacted on both
        paged_list(pair, rnd, names, 9, END, churn=True)
