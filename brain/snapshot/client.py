"""Saving a server's snapshot stream to a file."""
from __future__ import annotations

import os

from brain.client import Endpoint
from brain.etcdpb import rpc_pb2, rpc_pb2_grpc
from brain.snapshot.format import verify


def save_snapshot(endpoint: str, path: str, cacert: str = "", cert: str = "", key: str = "") -> int:
    """Stream the snapshot of the server at endpoint into path (through
    path.part, renamed once complete, synced and checked). Returns its size."""
    partial = path + ".part"
    size = 0
    try:
        with Endpoint.parse(endpoint, cacert, cert, key).channel() as ch, open(partial, "wb") as f:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            for resp in stub.Snapshot(rpc_pb2.SnapshotRequest()):
                f.write(resp.blob)
                size += len(resp.blob)
            f.flush()
            os.fsync(f.fileno())
        with open(partial, "rb") as f:
            verify(f, size)
        os.rename(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return size
