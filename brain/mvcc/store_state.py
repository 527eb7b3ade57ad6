"""What the MVCC store holds: its read view and key index, its commit
listeners, the fence, the compactor and the figures its metrics report.
The store's parts in their own modules build on it: the engine commit
(engine_commit.py), the group-commit writer (writer.py), and the store
itself (store.py), which opens, follows and closes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

from brain.errors import NoLeaderError, RequestTimeoutError
from brain.mvcc.compactor import Compactor
from brain.mvcc.inbox import Inbox
from brain.mvcc.key_index import APPLY_SLICE, KeyIndex
from brain.mvcc.keyset import read_keys
from brain.mvcc.kv import Change, CommitListener, WriteFence
from brain.mvcc.view import ReadView
from engines.base import Engine, EngineError, Snapshot, ordered

log = logging.getLogger(__name__)


class StoreState:
    def __init__(self, engine: Engine, *, sync: bool = True) -> None:
        self.engine = engine
        # an engine with ordered_writes takes the next batch before the last
        # returns, and hands back each commit's snapshot (refused here when
        # it declares the feature without the method)
        self.pipelined = ordered(engine)
        self.sync = sync
        self._view: ReadView | None = None
        self._loop = asyncio.get_running_loop()
        self._queue = Inbox(self._loop)
        self._writer: asyncio.Task | None = None
        self._listeners: list[CommitListener] = []
        self._closed = False
        # set when the store stopped without learning whether its last commit
        # applied: from then on it must not commit anything (see _settle)
        self._fenced = False
        # what the requests of a batch whose commit failed are told: set by
        # the failing commit, read by it and by the batches chained on it
        self._commit_failure: Callable[[], Exception] = RequestTimeoutError
        self.lease_exists: Callable[[int], bool] = lambda _id: False
        # set on a store that shares its engine with other brain processes
        # under an elected leader (brain/cluster): the fence gates commits,
        # and resync replaces _reload, feeding the revisions this process
        # missed to its listeners instead of only jumping over them
        self.fence: WriteFence | None = None
        self.resync: Callable[[], Awaitable[object]] | None = None
        # the fence's commits (MVCC batches, the compact revision, lease
        # records) all lock the term key, each in a transaction of its own:
        # run side by side, TiKV would refuse the later one as a write
        # conflict, so they go one at a time
        self.fence_lock = asyncio.Lock()
        # set while the store is a migration's target (brain/migrate): its
        # revisions are the source's, so every other write and compaction is
        # refused with this error until the cut-over clears it
        self.writes_refused: Callable[[], Exception] | None = None
        self.compactor = Compactor(self)
        # the keys live now and at recent revisions (key_index.py)
        self.index = KeyIndex(0)
        self._index_loader: asyncio.Task | None = None
        # figures for metrics
        self.batches = 0
        self.batched_requests = 0
        # etcd's raft proposals, counted per request through the writer:
        # committed once its batch is durable (or, like an etcd apply that
        # returns an error, once answered with its own error), failed when
        # its batch did not commit; pending is submitted minus both
        self.proposals_submitted = 0
        self.proposals_committed = 0
        self.proposals_failed = 0

    def _start_index(self, snap: Snapshot, rev: int) -> None:
        """A key index at rev that reads its keys in the background: the
        store serves at once (from the engine meanwhile), whatever its size."""
        index = self.index = KeyIndex(rev, None)

        async def load() -> None:
            try:
                keys, size = await read_keys(snap)
            except EngineError as e:
                log.error("cannot read the key set for the key index (%s); ranges are answered from the engine", e)
                return
            index.loaded(keys, size)
            log.info("key index loaded: %d keys at revision %d", len(keys), rev)

        if self._index_loader is not None:
            self._index_loader.cancel()
        self._index_loader = self._loop.create_task(load(), name="mvcc-key-index")

    async def index_loaded(self) -> None:
        """Return once the key index answers (it loads in the background
        after an open)."""
        task = self._index_loader
        if task is not None:
            await asyncio.shield(task)

    @property
    def keys_total(self) -> int:
        """Keys live at the current revision."""
        return len(self.index)

    @property
    def view(self) -> ReadView:
        return self._view  # type: ignore[return-value]

    @property
    def rev(self) -> int:
        return self._view.rev  # type: ignore[union-attr]

    @property
    def compact_rev(self) -> int:
        return self._view.compact_rev  # type: ignore[union-attr]

    def add_listener(self, fn: CommitListener) -> None:
        """fn(changes, rev) runs on the event loop after each durable commit."""
        self._listeners.append(fn)

    def remove_listener(self, fn: CommitListener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _index_apply(self, changes: Sequence[Change], rev: int) -> None:
        """The key index takes a commit: a large one a slice per turn of the
        loop (its readers wait for it meanwhile, see KeyIndex.settled), the
        rest at once, behind any still being applied."""
        if len(changes) > APPLY_SLICE:
            self.index.apply_in_slices(changes, rev)
        else:
            self.index.apply(changes, rev)

    def _check_fence(self) -> None:
        fence = self.fence
        if fence is not None and not fence.admits_writes():
            raise NoLeaderError()
