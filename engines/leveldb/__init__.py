"""The LevelDB engine (via plyvel): brain's default, single-process engine.

engine.py holds the engine, its write path and its threading model;
reads.py its scans and snapshots; files.py what it does with its files
(opening, syncing LevelDB's logs, size on disk, the free-space reserve).
"""
from __future__ import annotations

from engines.leveldb.engine import INLINE_SYNC_MAX, LevelDBEngine
from engines.leveldb.reads import INLINE_SCAN_ITEMS, LevelDBSnapshot

__all__ = ["INLINE_SCAN_ITEMS", "INLINE_SYNC_MAX", "LevelDBEngine", "LevelDBSnapshot"]
