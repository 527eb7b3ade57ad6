"""Percolator transactions with TiKV's rules, over one sqlite file.

What TiKV keeps per key, and what the fake keeps in two tables:
- locks: at most one lock per key, written by prewrite: the transaction's
  start_ts, its primary key, a TTL in milliseconds, the operation (Put, Del,
  or Lock, which writes nothing but still conflicts) and the value;
- writes: one record per committed or rolled-back transaction that touched
  the key, keyed by commit_ts: Put (with the value), Del, Lock, or Rollback
  (kept at the transaction's start_ts, so that it can never be prewritten
  or committed afterwards: "rollback protection").

Every request is one sqlite transaction, so it applies entirely or not at
all (TiKV's commands do the same: a prewrite meeting a lock or a conflict
writes nothing), and what was answered survives the fake's own SIGKILL
(sqlite's WAL: a process crash loses no committed transaction).

Errors are TiKV's own KeyError messages, raised as TxnError: the server
puts them into the response where TiKV does.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from .pb import kvrpcpb_pb2 as kvrpcpb
from .tso import physical_of

# sqlite's integers are signed 64-bit; TiKV's u64 "latest" is clamped to this
MAX_TS = 2**63 - 1
PUT, DEL, LOCK, ROLLBACK = kvrpcpb.Put, kvrpcpb.Del, kvrpcpb.Lock, kvrpcpb.Rollback
INSERT, CHECK_NOT_EXISTS = kvrpcpb.Insert, kvrpcpb.CheckNotExists

SCHEMA = """
CREATE TABLE IF NOT EXISTS locks (
    key BLOB PRIMARY KEY, primary_key BLOB NOT NULL, start_ts INTEGER NOT NULL,
    ttl INTEGER NOT NULL, op INTEGER NOT NULL, value BLOB, txn_size INTEGER NOT NULL,
    min_commit_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writes (
    key BLOB NOT NULL, commit_ts INTEGER NOT NULL, start_ts INTEGER NOT NULL,
    kind INTEGER NOT NULL, value BLOB, PRIMARY KEY (key, commit_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class TxnError(Exception):
    """A TiKV KeyError for the client."""

    def __init__(self, error: kvrpcpb.KeyError) -> None:
        super().__init__(str(error))
        self.error = error


class _Discard(Exception):
    """Undoes a prewrite that met locks: TiKV writes none of its keys then."""

    def __init__(self, errors: list[kvrpcpb.KeyError]) -> None:
        super().__init__(f"{len(errors)} key errors")
        self.errors = errors


@dataclass(frozen=True)
class Lock:
    key: bytes
    primary: bytes
    start_ts: int
    ttl: int
    op: int
    value: bytes | None
    txn_size: int
    min_commit_ts: int

    def info(self) -> kvrpcpb.LockInfo:
        return kvrpcpb.LockInfo(
            primary_lock=self.primary, lock_version=self.start_ts, key=self.key, lock_ttl=self.ttl,
            txn_size=self.txn_size, lock_type=self.op, min_commit_ts=self.min_commit_ts,
        )

    def expired_at(self, current_ts: int) -> bool:
        # TiKV compares physical times: the lock's start plus its TTL
        return physical_of(self.start_ts) + self.ttl < physical_of(current_ts)


@dataclass(frozen=True)
class Write:
    commit_ts: int
    start_ts: int
    kind: int
    value: bytes | None


def locked(lock: Lock) -> TxnError:
    return TxnError(kvrpcpb.KeyError(locked=lock.info()))


class MvccStore:
    """TiKV's transactional commands over a sqlite database (":memory:" for none)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _txn(self) -> Iterator[None]:
        """One request's changes, applied together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- metadata (the timestamp oracle's saved bound) ------------------------

    def meta(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return row[0] if row else 0

    def set_meta(self, name: str, value: int) -> None:
        # autocommit: a statement outside _txn is a transaction of its own
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # -- rows ------------------------------------------------------------------

    def _lock(self, key: bytes) -> Lock | None:
        row = self.db.execute("SELECT * FROM locks WHERE key=?", (key,)).fetchone()
        return Lock(*row) if row else None

    def _newest(self, key: bytes) -> Write | None:
        """The key's newest write record of any kind (Rollback included)."""
        row = self.db.execute(
            "SELECT commit_ts, start_ts, kind, value FROM writes WHERE key=? ORDER BY commit_ts DESC LIMIT 1", (key,)
        ).fetchone()
        return Write(*row) if row else None

    def _record_of(self, key: bytes, start_ts: int) -> Write | None:
        """The write record left by the transaction start_ts on key, if any."""
        row = self.db.execute(
            "SELECT commit_ts, start_ts, kind, value FROM writes WHERE key=? AND start_ts=?", (key, start_ts)
        ).fetchone()
        return Write(*row) if row else None

    def _put_write(self, key: bytes, w: Write) -> None:
        self.db.execute("INSERT OR REPLACE INTO writes VALUES (?, ?, ?, ?, ?)", (key, w.commit_ts, w.start_ts, w.kind, w.value))

    def _drop_lock(self, key: bytes) -> None:
        self.db.execute("DELETE FROM locks WHERE key=?", (key,))

    # -- reads (snapshot isolation at ts) -------------------------------------

    def _value(self, key: bytes, ts: int) -> bytes | None:
        """The value committed at or before ts; Lock and Rollback records are
        skipped: they say nothing about the value."""
        row = self.db.execute(
            "SELECT kind, value FROM writes WHERE key=? AND commit_ts<=? AND kind IN (?, ?) ORDER BY commit_ts DESC LIMIT 1",
            (key, ts, PUT, DEL),
        ).fetchone()
        return row[1] if row is not None and row[0] == PUT else None

    def _check_read_lock(self, key: bytes, ts: int) -> None:
        # A lock of a transaction that started at or before ts may commit
        # below ts: the reader cannot know the value until it is resolved.
        # Lock-type locks write nothing, so TiKV lets reads pass them.
        lock = self._lock(key)
        if lock is not None and lock.start_ts <= ts and lock.op in (PUT, DEL):
            raise locked(lock)

    def _keys(self, start: bytes, end: bytes, chunk: int = 256) -> Iterator[bytes]:
        """Every key with a record or a lock in [start, end), in order, a
        chunk at a time (a scan usually stops long before the end)."""
        upper = " AND key<?" if end else ""
        lower, low = "key>=?", start
        while True:
            sql = (f"SELECT key FROM writes WHERE {lower}{upper} UNION "
                   f"SELECT key FROM locks WHERE {lower}{upper} ORDER BY key LIMIT {chunk}")
            args: tuple = (low, end) if end else (low,)
            keys = [k for (k,) in self.db.execute(sql, args + args).fetchall()]
            yield from keys
            if len(keys) < chunk:
                return
            lower, low = "key>?", keys[-1]

    def get(self, key: bytes, ts: int) -> bytes | None:
        self._check_read_lock(key, ts)
        return self._value(key, ts)

    def scan(self, start: bytes, end: bytes, limit: int, ts: int) -> Iterator[tuple[bytes, bytes | None, TxnError | None]]:
        """(key, value, None) for each live key in [start, end) (end b"": no
        bound), or (key, None, error) for a key locked at ts; at most limit."""
        found = 0
        for key in self._keys(start, end):
            if found >= limit:
                return
            try:
                value = self.get(key, ts)
            except TxnError as e:
                found += 1
                yield key, None, e
                continue
            if value is not None:
                found += 1
                yield key, value, None

    # -- two-phase commit -------------------------------------------------------

    def prewrite(self, mutations: Sequence[kvrpcpb.Mutation], primary: bytes, start_ts: int, ttl: int, txn_size: int, min_commit_ts: int) -> list[kvrpcpb.KeyError]:
        """Lock every key for start_ts, or nothing: the errors (locks met, or
        one write conflict) otherwise."""
        try:
            with self._txn():
                errors: list[kvrpcpb.KeyError] = []
                for m in mutations:
                    try:
                        self._prewrite_key(m, primary, start_ts, ttl, txn_size, min_commit_ts)
                    except TxnError as e:
                        if e.error.HasField("conflict"):
                            raise _Discard([e.error]) from None  # TiKV stops at a conflict
                        errors.append(e.error)
                if errors:
                    raise _Discard(errors)
        except _Discard as d:
            return d.errors
        return []

    def _prewrite_key(self, m: kvrpcpb.Mutation, primary: bytes, start_ts: int, ttl: int, txn_size: int, min_commit_ts: int) -> None:
        lock = self._lock(m.key)
        if lock is not None:
            if lock.start_ts != start_ts:
                raise locked(lock)
            return  # a resent prewrite of our own
        newest = self._newest(m.key)
        if newest is not None and newest.commit_ts >= start_ts:
            # someone committed (or rolled back) after we started; a Rollback
            # at our own start_ts means we were rolled back: never lock again
            reason = kvrpcpb.WriteConflict.SelfRolledBack if newest.commit_ts == start_ts else kvrpcpb.WriteConflict.Optimistic
            raise TxnError(kvrpcpb.KeyError(conflict=kvrpcpb.WriteConflict(
                start_ts=start_ts, conflict_ts=newest.start_ts, key=m.key, primary=primary,
                conflict_commit_ts=newest.commit_ts, reason=reason,
            )))
        if m.op in (INSERT, CHECK_NOT_EXISTS) and self._value(m.key, MAX_TS) is not None:
            raise TxnError(kvrpcpb.KeyError(already_exist=kvrpcpb.AlreadyExist(key=m.key)))
        if m.op == CHECK_NOT_EXISTS:
            return
        op = PUT if m.op == INSERT else m.op
        if op not in (PUT, DEL, LOCK):
            raise TxnError(kvrpcpb.KeyError(abort=f"unsupported mutation {kvrpcpb.Op.Name(m.op)}"))
        self.db.execute(
            "INSERT INTO locks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (m.key, primary, start_ts, ttl, op, m.value if op == PUT else None, txn_size, min_commit_ts),
        )

    def commit(self, keys: Sequence[bytes], start_ts: int, commit_ts: int) -> None:
        """Turn start_ts's locks on keys into writes at commit_ts: all or none."""
        if commit_ts <= start_ts:
            raise TxnError(kvrpcpb.KeyError(abort=f"InvalidTxnTso {{ start_ts: {start_ts}, commit_ts: {commit_ts} }}"))
        with self._txn():
            for key in keys:
                self._commit_key(key, start_ts, commit_ts)

    def _commit_key(self, key: bytes, start_ts: int, commit_ts: int) -> None:
        lock = self._lock(key)
        if lock is None or lock.start_ts != start_ts:
            record = self._record_of(key, start_ts)
            if record is not None and record.kind != ROLLBACK:
                return  # committed already: a resent commit
            # rolled back (e.g. by a reader that found the lock expired), or never prewritten
            raise TxnError(kvrpcpb.KeyError(retryable=f"TxnLockNotFound {{ start_ts: {start_ts}, commit_ts: {commit_ts}, key: {list(key)} }}"))
        if commit_ts < lock.min_commit_ts:
            raise TxnError(kvrpcpb.KeyError(commit_ts_expired=kvrpcpb.CommitTsExpired(
                start_ts=start_ts, attempted_commit_ts=commit_ts, key=key, min_commit_ts=lock.min_commit_ts)))
        self._put_write(key, Write(commit_ts, start_ts, lock.op, lock.value))
        self._drop_lock(key)

    def rollback(self, keys: Sequence[bytes], start_ts: int) -> None:
        """Roll start_ts back on keys, leaving a Rollback record even where it
        never locked, so that a late prewrite of it fails."""
        with self._txn():
            for key in keys:
                self._rollback_key(key, start_ts)

    def _rollback_key(self, key: bytes, start_ts: int) -> None:
        record = self._record_of(key, start_ts)
        if record is not None:
            if record.kind != ROLLBACK:
                raise TxnError(kvrpcpb.KeyError(abort=f"Committed {{ start_ts: {start_ts}, commit_ts: {record.commit_ts}, key: {list(key)} }}"))
            return
        lock = self._lock(key)
        if lock is not None and lock.start_ts == start_ts:
            self._drop_lock(key)
        self._put_write(key, Write(start_ts, start_ts, ROLLBACK, None))

    # -- settling a transaction whose client may be gone ---------------------

    def txn_status(self, primary: bytes, start_ts: int, current_ts: int, rollback_if_not_exist: bool, caller_start_ts: int = 0) -> kvrpcpb.CheckTxnStatusResponse:
        """KvCheckTxnStatus on the primary key: committed (commit_version),
        rolled back (both 0), or alive (lock_ttl); an expired lock is rolled
        back here, which decides the whole transaction."""
        out = kvrpcpb.CheckTxnStatusResponse()
        with self._txn():
            lock = self._lock(primary)
            if lock is not None and lock.start_ts == start_ts:
                if lock.expired_at(current_ts):
                    self._rollback_key(primary, start_ts)
                    out.action = kvrpcpb.TTLExpireRollback
                    return out
                if 0 < caller_start_ts < MAX_TS and lock.min_commit_ts <= caller_start_ts:
                    # the reader at caller_start_ts will not wait: the
                    # transaction must commit above it
                    self.db.execute("UPDATE locks SET min_commit_ts=? WHERE key=?", (caller_start_ts + 1, primary))
                    lock = self._lock(primary)
                    out.action = kvrpcpb.MinCommitTSPushed
                out.lock_ttl = lock.ttl  # type: ignore[union-attr]
                out.lock_info.CopyFrom(lock.info())  # type: ignore[union-attr]
                return out
            record = self._record_of(primary, start_ts)
            if record is not None:
                if record.kind != ROLLBACK:
                    out.commit_version = record.commit_ts
                return out
            if not rollback_if_not_exist:
                raise TxnError(kvrpcpb.KeyError(txn_not_found=kvrpcpb.TxnNotFound(start_ts=start_ts, primary_key=primary)))
            self._rollback_key(primary, start_ts)
            out.action = kvrpcpb.LockNotExistRollback
            return out

    def cleanup(self, key: bytes, start_ts: int, current_ts: int) -> int:
        """KvCleanup (the older form of the same question): the commit_ts if
        start_ts committed; else rolls it back and answers 0, unless its lock
        is still alive (current_ts 0: roll back regardless)."""
        with self._txn():
            lock = self._lock(key)
            if lock is not None and lock.start_ts == start_ts and current_ts != 0 and not lock.expired_at(current_ts):
                raise locked(lock)
            record = self._record_of(key, start_ts)
            if record is not None and record.kind != ROLLBACK:
                return record.commit_ts
            self._rollback_key(key, start_ts)
            return 0

    def resolve(self, start_ts: int, commit_ts: int, keys: Sequence[bytes]) -> None:
        """Commit (commit_ts > 0) or roll back start_ts's locks: on keys, or
        on every key it still locks when keys is empty."""
        if not keys:
            keys = [k for (k,) in self.db.execute("SELECT key FROM locks WHERE start_ts=?", (start_ts,))]
        if commit_ts:
            self.commit(keys, start_ts, commit_ts)
        else:
            self.rollback(keys, start_ts)

    def heartbeat(self, primary: bytes, start_ts: int, advise_ttl: int) -> int:
        """Extend a live transaction's TTL (never shorten it); the TTL now."""
        with self._txn():
            lock = self._lock(primary)
            if lock is None or lock.start_ts != start_ts:
                raise TxnError(kvrpcpb.KeyError(txn_not_found=kvrpcpb.TxnNotFound(start_ts=start_ts, primary_key=primary)))
            ttl = max(lock.ttl, advise_ttl)
            self.db.execute("UPDATE locks SET ttl=? WHERE key=?", (ttl, primary))
            return ttl

    def max_ts(self) -> int:
        """The highest timestamp stored (a floor for the oracle on restart)."""
        row = self.db.execute("SELECT MAX(m) FROM (SELECT MAX(commit_ts) m FROM writes UNION SELECT MAX(start_ts) FROM locks)").fetchone()
        return row[0] or 0
