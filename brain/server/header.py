"""Response headers: the identity of this one-member cluster, and the revision."""
from __future__ import annotations

import hashlib
import os

from brain.mvcc import records as K
from brain.mvcc.kv import KV
from brain.wire import varint
from brain.wire.responses import response_header_around_revision
from engines.base import ConflictError, Engine, WriteBatch

# A single member is always the leader of term 1: there is no election.
RAFT_TERM = 1


class Header:
    """Fills cluster_id, member_id and raft_term; revision when a response left it 0."""

    __slots__ = ("cluster_id", "member_id", "raft_term", "store", "_before_rev", "_after_rev")

    def __init__(self, store: KV, cluster_id: int, member_id: int) -> None:
        self.store = store
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.raft_term = RAFT_TERM
        self._before_rev, self._after_rev = response_header_around_revision(cluster_id, member_id, self.raft_term)

    def encode(self, revision: int) -> bytes:
        """The serialized ResponseHeader at revision (> 0)."""
        return self._before_rev + varint(revision) + self._after_rev

    def fill(self, h) -> None:
        h.cluster_id = self.cluster_id
        h.member_id = self.member_id
        h.raft_term = self.raft_term
        if h.revision == 0:
            h.revision = self.store.rev

    def fill_without_revision(self, h) -> None:
        h.cluster_id = self.cluster_id
        h.member_id = self.member_id
        h.raft_term = self.raft_term


async def load_identity(engine: Engine, name: str) -> tuple[int, int]:
    """Stable ids: the cluster id is drawn once and kept in the engine; the
    member id is derived from it and the member name."""
    raw = await engine.get(K.META_CLUSTER_ID)
    if raw is None:
        drawn = os.urandom(8)
        wb = WriteBatch()
        wb.put(K.META_CLUSTER_ID, drawn)
        try:
            # processes sharing one engine may start at once: one id wins
            await engine.commit_if([(K.META_CLUSTER_ID, None)], wb, sync=True)
            raw = drawn
        except ConflictError:
            raw = await engine.get(K.META_CLUSTER_ID)
            assert raw is not None
    cluster_id = int.from_bytes(raw, "big") & 0x7FFFFFFFFFFFFFFF or 1
    digest = hashlib.sha256(raw + name.encode()).digest()
    member_id = int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF or 1
    return cluster_id, member_id
