"""Storage engines behind brain's MVCC layer, and the factory that opens them.

`engines.base` is the contract; `engines.conformance` is the suite an engine
must pass (`brain engine-check`).
"""
from __future__ import annotations

import logging
from typing import Any

from engines.base import (
    CommitUnknownError,
    ConflictError,
    Engine,
    EngineClosedError,
    EngineError,
    EngineFeatures,
    EngineLockedError,
    EngineUnavailableError,
    Snapshot,
    WriteBatch,
    check_key,
    check_range,
)

__all__ = [
    "ENGINE_NAMES",
    "CommitUnknownError",
    "ConflictError",
    "Engine",
    "EngineClosedError",
    "EngineError",
    "EngineFeatures",
    "EngineLockedError",
    "EngineUnavailableError",
    "Snapshot",
    "WriteBatch",
    "check_key",
    "check_range",
    "open_engine",
]

log = logging.getLogger(__name__)

ENGINE_NAMES = ("leveldb", "memory", "tikv")


def open_engine(name: str, *, data_dir: str | None = None, **options: Any) -> Engine:
    """Open the engine called name.

    leveldb: data_dir is required; options are LevelDBEngine's keyword
    arguments (create, write_buffer_size, lru_cache_size, ...).
    memory: no options; data_dir is ignored (nothing is stored on disk).
    tikv: pd_endpoints is required, key_prefix separates brain clusters
    sharing one TiKV; other options are open_tikv's (engines/tikv/open.py).
    data_dir is ignored.
    Unknown options raise TypeError naming them.
    """
    # imported here so that one engine's missing dependency (plyvel, a TiKV
    # client) does not stop the others from opening
    if name == "leveldb":
        if not data_dir:
            raise ValueError("the leveldb engine needs a data directory (data_dir)")
        from engines.leveldb import LevelDBEngine

        return LevelDBEngine(data_dir, **options)
    if name == "memory":
        if options:
            raise TypeError(f"the memory engine takes no options, got: {', '.join(sorted(options))}")
        if data_dir:
            log.info("memory engine: data dir %s is not used", data_dir)
        from engines.memory import MemoryEngine

        return MemoryEngine()
    if name == "tikv":
        # the keys live in TiKV under key_prefix; a data directory means nothing here
        if data_dir:
            log.debug("tikv engine: data dir %s is not used", data_dir)
        from engines.tikv import open_tikv

        return open_tikv(**options)
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINE_NAMES)}")
