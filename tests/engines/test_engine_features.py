"""Declared engine features: each has a conformance check, the check fails
an engine that declares the feature without honouring it, and brain's
accessors hand out an engine's optional parts only when it declares them.
(That the real engines pass the checks of what they declare is
test_conformance.py's and the TiKV conformance tests' part.)"""
from __future__ import annotations

import asyncio
from dataclasses import fields

import pytest
from misdeclared_double import MisdeclaredEngineDouble, MisdeclaredTarget

from engines.base import ordered
from engines.conformance import CHECKS, run_check
from engines.conformance.runner import FAIL, SKIP
from engines.features import EngineFeatures, compacting, inline_sync_hint, sized, sync_counting, timed
from engines.leveldb import LevelDBEngine
from engines.memory import MemoryEngine

FEATURES = [f.name for f in fields(EngineFeatures)]
CHECK_OF = {c.name: c for c in CHECKS}
# what each check finds wrong with the double (misdeclared_double.py)
REASONS = {
    "shared": "the second engine's get of a key the first wrote",
    "ordered_writes": "calls made in order failed",
    "inline_sync_hint": "suspended its caller",
    "disk_size": "bytes_written grew by 0",
    "compact_range": "declares compact_range but has no compact_range",
    "latency_histograms": "commit_durations counted 0",
    "sync_counters": "synced writes counted",
}


def _check(feature: str):
    return CHECK_OF[feature.replace("_", "-")]


def test_every_feature_has_a_check():
    assert all(f.replace("_", "-") in CHECK_OF for f in FEATURES)
    assert sorted(REASONS) == sorted(FEATURES)


@pytest.mark.parametrize("feature", FEATURES)
def test_a_feature_declared_and_not_honoured_fails_its_check(feature):
    result = run_check(MisdeclaredTarget("misdeclared", {"claim": feature}), _check(feature))
    assert result.status == FAIL and REASONS[feature] in result.detail, result.line()


def test_an_engine_declaring_ordered_writes_without_commit_snapshot_is_refused_at_open():
    from brain.mvcc.store import MVCCStore

    class NoCommitSnapshot:  # the declaration is looked at before anything else
        features = EngineFeatures(ordered_writes=True)

    engine = NoCommitSnapshot()
    with pytest.raises(TypeError, match="declares ordered_writes but has no commit_snapshot"):
        asyncio.run(MVCCStore.open(engine))  # type: ignore[arg-type]


def test_a_commit_snapshot_that_holds_later_writes_fails_the_ordered_writes_check():
    # the writes are in order; the snapshot is taken after the next ones applied
    result = run_check(MisdeclaredTarget("misdeclared", {"claim": "ordered_writes", "flaw": "late_snapshot"}), _check("ordered_writes"))
    assert result.status == FAIL and "(its own batch, not a later one)" in result.detail, result.line()


@pytest.mark.parametrize("feature", FEATURES)
def test_a_feature_not_declared_skips_its_check(feature):
    result = run_check(MisdeclaredTarget("misdeclared", {"claim": None}), _check(feature))
    assert result.status == SKIP and f"does not declare {feature}" in result.detail, result.line()


def test_accessors_follow_the_declaration(tmp_path):
    async def main() -> None:
        memory = MemoryEngine()
        assert [sized(memory), compacting(memory), timed(memory), sync_counting(memory), inline_sync_hint(memory)] == [None] * 5
        # the members are there, but not declared: brain does not use them
        undeclared = MisdeclaredEngineDouble(None)
        assert sized(undeclared) is None and inline_sync_hint(undeclared) is None and ordered(undeclared) is None
        assert ordered(memory) is memory
        assert sized(MisdeclaredEngineDouble("disk_size")) is not None
        leveldb = LevelDBEngine(str(tmp_path / "db"))
        try:
            assert sized(leveldb) is leveldb and compacting(leveldb) is leveldb
            assert timed(leveldb) is leveldb and sync_counting(leveldb) is leveldb and ordered(leveldb) is leveldb
            hint = inline_sync_hint(leveldb)
            assert hint is not None and hint() is True
        finally:
            await leveldb.close()
            await memory.close()

    asyncio.run(main())


def test_declared_lists_the_features_set():
    assert EngineFeatures().declared() == []
    assert EngineFeatures(shared=True, disk_size=True).declared() == ["shared", "disk_size"]
