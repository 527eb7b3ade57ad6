"""A raw gRPC client of the fake, for tests that check TiKV's rules request
by request, below tikv-client (which never lets a caller choose timestamps,
prewrite without committing, or roll back a key it did not write)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import grpc

from .pb import kvrpcpb_pb2 as kvrpcpb
from .pb import pdpb_pb2 as pdpb
from .pb import pdpb_pb2_grpc, tikvpb_pb2_grpc
from .server import REGION_ID
from .tso import compose

TIMEOUT = 10.0


@dataclass
class Wire:
    pd_endpoint: str
    tikv_endpoint: str
    _channels: list[grpc.Channel] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        pd, tikv = grpc.insecure_channel(self.pd_endpoint), grpc.insecure_channel(self.tikv_endpoint)
        self._channels = [pd, tikv]
        self.pd = pdpb_pb2_grpc.PDStub(pd)
        self.kv = tikvpb_pb2_grpc.TikvStub(tikv)
        self.ctx = kvrpcpb.Context(region_id=REGION_ID)

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    def tso_batch(self, count: int) -> pdpb.TsoResponse:
        return next(iter(self.pd.Tso(iter([pdpb.TsoRequest(count=count)]), timeout=TIMEOUT)))

    def ts(self) -> int:
        got = self.tso_batch(1)
        return compose(got.timestamp.physical, got.timestamp.logical)

    def get(self, key: bytes, ts: int) -> kvrpcpb.GetResponse:
        return self.kv.KvGet(kvrpcpb.GetRequest(context=self.ctx, key=key, version=ts), timeout=TIMEOUT)

    def scan(self, start: bytes, end: bytes, ts: int, limit: int = 100, key_only: bool = False) -> kvrpcpb.ScanResponse:
        return self.kv.KvScan(kvrpcpb.ScanRequest(context=self.ctx, start_key=start, end_key=end, version=ts, limit=limit, key_only=key_only), timeout=TIMEOUT)

    def prewrite(self, puts: dict[bytes, bytes | None], primary: bytes, start_ts: int, ttl: int = 3000, locks: Sequence[bytes] = ()) -> list[kvrpcpb.KeyError]:
        """puts: key -> value (None: delete); locks: keys locked only."""
        mutations = [kvrpcpb.Mutation(op=kvrpcpb.Put if v is not None else kvrpcpb.Del, key=k, value=v or b"") for k, v in puts.items()]
        mutations += [kvrpcpb.Mutation(op=kvrpcpb.Lock, key=k) for k in locks]
        req = kvrpcpb.PrewriteRequest(context=self.ctx, mutations=mutations, primary_lock=primary, start_version=start_ts, lock_ttl=ttl)
        return list(self.kv.KvPrewrite(req, timeout=TIMEOUT).errors)

    def commit(self, keys: Sequence[bytes], start_ts: int, commit_ts: int) -> kvrpcpb.CommitResponse:
        return self.kv.KvCommit(kvrpcpb.CommitRequest(context=self.ctx, keys=keys, start_version=start_ts, commit_version=commit_ts), timeout=TIMEOUT)

    def rollback(self, keys: Sequence[bytes], start_ts: int) -> kvrpcpb.BatchRollbackResponse:
        return self.kv.KvBatchRollback(kvrpcpb.BatchRollbackRequest(context=self.ctx, keys=keys, start_version=start_ts), timeout=TIMEOUT)

    def cleanup(self, key: bytes, start_ts: int, current_ts: int) -> kvrpcpb.CleanupResponse:
        return self.kv.KvCleanup(kvrpcpb.CleanupRequest(context=self.ctx, key=key, start_version=start_ts, current_ts=current_ts), timeout=TIMEOUT)

    def resolve(self, start_ts: int, commit_ts: int, keys: Sequence[bytes] = ()) -> kvrpcpb.ResolveLockResponse:
        return self.kv.KvResolveLock(kvrpcpb.ResolveLockRequest(context=self.ctx, start_version=start_ts, commit_version=commit_ts, keys=keys), timeout=TIMEOUT)

    def heartbeat(self, primary: bytes, start_ts: int, ttl: int) -> kvrpcpb.TxnHeartBeatResponse:
        return self.kv.KvTxnHeartBeat(kvrpcpb.TxnHeartBeatRequest(context=self.ctx, primary_lock=primary, start_version=start_ts, advise_lock_ttl=ttl), timeout=TIMEOUT)

    def txn_status(self, primary: bytes, lock_ts: int, current_ts: int, rollback_if_not_exist: bool = False, caller_start_ts: int = 0) -> kvrpcpb.CheckTxnStatusResponse:
        req = kvrpcpb.CheckTxnStatusRequest(context=self.ctx, primary_key=primary, lock_ts=lock_ts, current_ts=current_ts,
                                            caller_start_ts=caller_start_ts, rollback_if_not_exist=rollback_if_not_exist)
        return self.kv.KvCheckTxnStatus(req, timeout=TIMEOUT)

    def put(self, key: bytes, value: bytes | None) -> int:
        """A whole transaction writing one key; its commit_ts."""
        start = self.ts()
        assert self.prewrite({key: value}, key, start) == []
        commit = self.ts()
        assert not self.commit([key], start, commit).HasField("error")
        return commit
