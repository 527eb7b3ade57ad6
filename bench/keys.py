"""Where the Python client's workloads write: under one kube-like prefix, so
that a run against a shared endpoint can find and delete everything it wrote."""
from __future__ import annotations

from engines.base import prefix_end as engine_prefix_end

PREFIX = b"/registry/brain-bench/"
LIST_PREFIX = PREFIX + b"list/"
GET_KEY = PREFIX + b"get/one"


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for 'every key starting with prefix' ("\\0": no end)."""
    return engine_prefix_end(prefix) or b"\x00"


def run_prefix(workload: str, tag: str) -> bytes:
    """Keys of one run of one workload (tags keep rounds apart)."""
    return PREFIX + f"{workload}/{tag}/".encode()


def list_key(i: int) -> bytes:
    return LIST_PREFIX + f"{i:08d}".encode()
