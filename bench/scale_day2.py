"""The day-2 phases of `brain bench --scale`: a snapshot of the loaded store
streamed to a file (with the probe running), its restore into a new data
directory (etcdutl for etcd, `brain snapshot restore` for brain), and, with
--compare, `brain migrate` from the loaded etcd."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Any

import grpc

from bench.servers import ManagedServer, etcd_binary
from brain.etcdpb import rpc_pb2 as pb, rpc_pb2_grpc

_UNLIMITED = [("grpc.max_receive_message_length", -1)]


def snapshot_save(srv: ManagedServer, path: str) -> dict[str, Any]:
    """Stream the server's snapshot into path, as etcdctl snapshot save does."""
    t0 = time.monotonic()
    size = 0
    with grpc.insecure_channel(srv.endpoint, options=_UNLIMITED) as ch, open(path, "wb") as f:
        for resp in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest(), timeout=3600):
            f.write(resp.blob)
            size += len(resp.blob)
        f.flush()
        os.fsync(f.fileno())
    return {"seconds": time.monotonic() - t0, "bytes": size}


def snapshot_restore(kind: str, path: str, data_dir: str) -> dict[str, Any]:
    if kind == "etcd":
        argv = [os.path.join(os.path.dirname(etcd_binary()), "etcdutl"), "snapshot", "restore", path, "--data-dir", data_dir]
    else:
        argv = [sys.executable, "-m", "brain", "snapshot", "restore", path, "--data-dir", data_dir]
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=3600)
    return {"seconds": time.monotonic() - t0}


def migrate_from(srv: ManagedServer, data_dir: str, keys: int) -> dict[str, Any]:
    """brain migrate --once from a loaded etcd."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "brain", "migrate", "--from", srv.endpoint, "--data-dir", data_dir, "--once"],
                   check=True, capture_output=True, timeout=7200)
    took = time.monotonic() - t0
    return {"seconds": took, "keys_per_s": keys / took}


def cleanup(*paths: str) -> None:
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.unlink(p)
