"""The read side of MVCC: a read-only transaction over one committed view.

etcd answers a Txn whose branches only read without going through raft, at
the revision committed when it starts. A `ReadTxn` is that: every read at
the view's revision, and no method that writes, so a read-only txn cannot
write by mistake (the type checker refuses it).
"""
from __future__ import annotations

from brain.mvcc.kv import RangeEnd, RawRange, TxnRead
from brain.mvcc.view import ReadView


class ReadTxn:
    __slots__ = ("view",)

    def __init__(self, view: ReadView) -> None:
        self.view = view

    def rev(self) -> int:
        return self.view.rev

    @property
    def compact_rev(self) -> int:
        return self.view.compact_rev

    async def get(self, key: bytes) -> bytes | None:
        return await self.view.get_live(key)

    async def range(
        self, key: bytes, end: RangeEnd, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RawRange:
        view = self.view
        rev = view.check_rev(rev)
        if rev == view.rev and end is None:
            raw = await view.get_live(key)
            if raw is None:
                return RawRange([], 0)
            return RawRange([] if count_only else [raw], 1)
        return await view.range(key, end, rev, limit, count_only)


# held to the interface by the type checker
_IMPLEMENTS: type[TxnRead] = ReadTxn
