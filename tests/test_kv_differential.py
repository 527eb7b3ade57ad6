"""Seeded random sequences of KV operations against real etcd 3.5 and brain,
every response compared field by field."""
from __future__ import annotations

import random

import pytest

from bench.keys import prefix_end
from brain.etcdpb import rpc_pb2
from differential import Pair

KEYS = [b"a", b"a/", b"a/b", b"a/b/c", b"a/c", b"a\x00", b"b", b"b/1", b"b/2", b"\x00", b"\xff", b"z" * 40]
PREFIXES = [b"a", b"a/", b"b/", b"\xff", b"z"]
SEEDS = [1, 2, 3, 4, 5, 6]
OPS_PER_SEED = 400


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.rev = 1
        self.compact = 0
        self.mod: dict[bytes, int] = {}

    def key(self) -> bytes:
        return self.r.choice(KEYS)

    def value(self) -> bytes:
        r = self.r
        return bytes(r.getrandbits(8) for _ in range(r.choice([0, 1, 3, 10, 100])))

    def span(self) -> tuple[bytes, bytes]:
        r = self.r
        c = r.random()
        if c < 0.35:
            return self.key(), b""
        if c < 0.6:
            p = r.choice(PREFIXES)
            return p, prefix_end(p)
        if c < 0.7:
            return self.key(), b"\x00"
        a, b = self.key(), self.key()
        return a, b  # may be inverted: an empty range

    def revision(self) -> int:
        r = self.r
        c = r.random()
        if c < 0.6:
            return 0
        if c < 0.9:
            return r.randint(max(1, self.compact), self.rev)
        return r.choice([self.rev + 1, self.rev + 5, max(0, self.compact - 1), 1])

    def range_req(self, small: bool = False) -> rpc_pb2.RangeRequest:
        r = self.r
        k, e = self.span()
        req = rpc_pb2.RangeRequest(key=k, range_end=e, revision=self.revision())
        if r.random() < 0.4:
            req.limit = r.choice([1, 2, 3, 5, -1])
        if r.random() < 0.15:
            req.keys_only = True
        if r.random() < 0.1:
            req.count_only = True
        if r.random() < 0.1:
            req.serializable = True
        if r.random() < 0.2:
            # sort by key is total; other targets only on ties-free fields
            req.sort_target = r.choice([rpc_pb2.RangeRequest.KEY, rpc_pb2.RangeRequest.MOD, rpc_pb2.RangeRequest.CREATE])
            req.sort_order = r.choice([0, 1, 2])
        if r.random() < 0.15:
            lo = r.randint(0, self.rev)
            setattr(req, r.choice(["min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"]), lo)
        return req

    def put_req(self) -> rpc_pb2.PutRequest:
        r = self.r
        req = rpc_pb2.PutRequest(key=self.key(), value=self.value(), prev_kv=r.random() < 0.5)
        c = r.random()
        if c < 0.05:
            req.ignore_value = True
            req.value = b""
        elif c < 0.08:
            req.ignore_lease = True
        elif c < 0.09:
            req.ignore_value = True  # with a value: "value is provided"
            req.value = b"x"
        return req

    def delete_req(self) -> rpc_pb2.DeleteRangeRequest:
        k, e = self.span()
        return rpc_pb2.DeleteRangeRequest(key=k, range_end=e, prev_kv=self.r.random() < 0.5)

    def compare(self) -> rpc_pb2.Compare:
        r = self.r
        k, e = self.span() if r.random() < 0.2 else (self.key(), b"")
        c = rpc_pb2.Compare(key=k, range_end=e, result=r.choice([0, 1, 2, 3]))
        t = r.choice([0, 1, 2, 3, 4])
        c.target = t
        if t == rpc_pb2.Compare.VERSION:
            c.version = r.randint(0, 4)
        elif t == rpc_pb2.Compare.CREATE:
            c.create_revision = r.randint(0, self.rev)
        elif t == rpc_pb2.Compare.MOD:
            c.mod_revision = self.mod.get(k, 0) if r.random() < 0.5 else r.randint(0, self.rev)
        elif t == rpc_pb2.Compare.VALUE:
            c.value = self.value() if r.random() < 0.7 else b""
        else:
            c.lease = 0
        return c

    def op(self, depth: int) -> rpc_pb2.RequestOp:
        r = self.r
        c = r.random()
        if c < 0.3:
            return rpc_pb2.RequestOp(request_range=self.range_req(small=True))
        if c < 0.65:
            p = self.put_req()
            return rpc_pb2.RequestOp(request_put=p)
        if c < 0.85 or depth >= 2:
            return rpc_pb2.RequestOp(request_delete_range=self.delete_req())
        return rpc_pb2.RequestOp(request_txn=self.txn_req(depth + 1))

    def txn_req(self, depth: int = 0) -> rpc_pb2.TxnRequest:
        r = self.r
        t = rpc_pb2.TxnRequest()
        t.compare.extend(self.compare() for _ in range(r.randint(0, 3)))
        t.success.extend(self.op(depth) for _ in range(r.randint(0, 3)))
        t.failure.extend(self.op(depth) for _ in range(r.randint(0, 2)))
        return t

    def kube_txn(self) -> rpc_pb2.TxnRequest:
        """The shapes kube-apiserver sends: create, guaranteed update, delete."""
        r = self.r
        k = self.key()
        rev = self.mod.get(k, 0) if r.random() < 0.7 else r.randint(0, self.rev)
        cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL, mod_revision=rev)
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))
        c = r.random()
        if c < 0.3:
            cmp.mod_revision = 0
            return rpc_pb2.TxnRequest(compare=[cmp], success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=self.value()))])
        if c < 0.75:
            return rpc_pb2.TxnRequest(compare=[cmp], success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=self.value()))], failure=[get])
        return rpc_pb2.TxnRequest(compare=[cmp], success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))], failure=[get])


def track(gen: Gen, resp) -> None:
    if resp is not None and resp.header.revision:
        gen.rev = max(gen.rev, resp.header.revision)


def run_sequence(pair: Pair, seed: int, n: int) -> None:
    gen = Gen(seed)
    r = gen.r
    for i in range(n):
        c = r.random()
        ctx = f"seed {seed} op {i}"
        if c < 0.25:
            out = pair.both("Range", gen.range_req(), ctx)
        elif c < 0.45:
            req = gen.put_req()
            out = pair.both("Put", req, ctx)
            if out.resp is not None:
                gen.mod[req.key] = out.resp.header.revision
        elif c < 0.55:
            out = pair.both("DeleteRange", gen.delete_req(), ctx)
        elif c < 0.75:
            out = pair.both("Txn", gen.txn_req(), ctx)
        elif c < 0.95:
            out = pair.both("Txn", gen.kube_txn(), ctx)
        else:
            rev = r.randint(max(1, gen.compact - 1), gen.rev + 1)
            out = pair.both("Compact", rpc_pb2.CompactionRequest(revision=rev, physical=r.random() < 0.5), ctx)
            if out.resp is not None:
                gen.compact = rev
        track(gen, out.resp)
        if r.random() < 0.05:
            # refresh the view of every key's mod revision
            full = pair.both("Range", rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), ctx + " (refresh)")
            gen.mod = {kv.key: kv.mod_revision for kv in full.resp.kvs}
    # the final state, whole
    pair.both("Range", rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), f"seed {seed} final")


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequence_matches_etcd(etcd, brain, seed):
    with etcd.channel() as ce, brain.channel() as cb:
        pair = Pair(ce, cb)
        run_sequence(pair, seed, OPS_PER_SEED)
        assert pair.calls > OPS_PER_SEED


def read_only_txn(gen: Gen) -> rpc_pb2.TxnRequest:
    """A Txn whose branches only read (brain answers it on a read-only txn,
    apply_read_txn), or kube-apiserver's one-key read shape (apply_single_key_reads)."""
    r = gen.r
    if r.random() < 0.3:
        k = gen.key()
        cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL,
                              mod_revision=gen.mod.get(k, 0) if r.random() < 0.5 else r.randint(0, gen.rev))
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))
        return rpc_pb2.TxnRequest(compare=[cmp], success=[get] if r.random() < 0.5 else [], failure=[get])
    t = rpc_pb2.TxnRequest()
    t.compare.extend(gen.compare() for _ in range(r.randint(0, 3)))
    t.success.extend(rpc_pb2.RequestOp(request_range=gen.range_req()) for _ in range(r.randint(0, 3)))
    t.failure.extend(rpc_pb2.RequestOp(request_range=gen.range_req()) for _ in range(r.randint(0, 2)))
    return t


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_read_only_txns_match_etcd(etcd, brain, seed):
    """Read-only Txns, at the current revision and at older, future and
    compacted ones, after a random history."""
    with etcd.channel() as ce, brain.channel() as cb:
        pair = Pair(ce, cb)
        run_sequence(pair, seed, 150)
        gen = Gen(seed + 100)
        full = pair.both("Range", rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"))
        gen.rev = full.resp.header.revision
        gen.mod = {kv.key: kv.mod_revision for kv in full.resp.kvs}
        compact = gen.rev // 2
        pair.both("Compact", rpc_pb2.CompactionRequest(revision=compact))
        gen.compact = compact
        for i in range(200):
            pair.both("Txn", read_only_txn(gen), f"seed {seed} read-only txn {i}")
