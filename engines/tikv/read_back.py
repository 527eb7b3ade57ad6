"""The read-back after a conditional commit (TikvEngine.commit_if).

tikv-client 0.0.4's commit() was seen to return success for a transaction
whose primary commit never reached TiKV (TiKV died as it arrived; after its
restart another client's reader rolled the transaction back). A read after
the commit settles the transaction if it is still undecided (a reader
meeting its lock resolves it through the primary), so a key that does not
hold what was written, or a read that fails, makes the outcome unknown for
the caller to settle.

Only conditional commits are read back: their callers (the MVCC store, the
election) write keys nobody else writes meanwhile, and settle an unknown
outcome; a blind write's key may be written over by another client before
the read, which would read as unknown.
"""
from __future__ import annotations

from typing import Protocol

from engines.base import CommitUnknownError, EngineClosedError, EngineError
from engines.validate import Op


class ReadsKeyAtTimestamp(Protocol):
    async def get_at(self, ts: int, key: bytes) -> bytes | None: ...


async def confirm_commit(engine: ReadsKeyAtTimestamp, op: Op, ts: int) -> None:
    """Read the key of the commit's write op back at ts, a timestamp taken
    right after the commit; CommitUnknownError unless it holds what op wrote."""
    key, value = op
    try:
        got = await engine.get_at(ts, key)
    except EngineClosedError:
        raise
    except EngineError as e:
        raise CommitUnknownError(f"tikv: the commit could not be read back ({e}); the batch may or may not be applied") from None
    if got != value:
        raise CommitUnknownError("tikv: a key the commit wrote does not hold what it wrote when read back after it; "
                                 "the batch may or may not be applied")
