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
        raise NotImplementedError("the tikv engine is not implemented yet; use --engine leveldb or memory")
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINE_NAMES)}")
