"""Where the Python client's workloads write: under one kube-like prefix, so
that a run against a shared endpoint can find and delete everything it wrote."""
from __future__ import annotations

PREFIX = b"/registry/brain-bench/"
LIST_PREFIX = PREFIX + b"list/"
GET_KEY = PREFIX + b"get/one"


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for 'every key starting with prefix'."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def run_prefix(workload: str, tag: str) -> bytes:
    """Keys of one run of one workload (tags keep rounds apart)."""
    return PREFIX + f"{workload}/{tag}/".encode()


def list_key(i: int) -> bytes:
    return LIST_PREFIX + f"{i:08d}".encode()
