"""The engine conformance suite on the TiKV engine.

- Always: over the tikv-client test double (FakeTikv), each check in its own
  key prefix of a cluster that also holds other keys around it, with tiny
  scan pages and tonic's 4 MiB response limit, so prefixing, pagination and
  page shrinking are exercised by every check. The two kill checks need the
  data shared with a helper process, which the in-process double cannot be.
- When BRAIN_TEST_TIKV_PD_ENDPOINTS names PD endpoints (host:2379,...): every
  check against that real TiKV cluster, each under its own key prefix, which
  is deleted afterwards. This is what `brain engine-check --engine tikv` runs.
- Every check over the real tikv-client and a fake PD + TiKV process, the
  kill checks included, always runs too: test_tikv_fake_conformance.py.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from tikv_double import FakeTikv

from engines.base import Engine, WriteBatch
from engines.conformance import CHECKS, EngineTarget, run_check
from engines.conformance.runner import FAIL, SKIP
from engines.tikv import open_tikv

ENV = "BRAIN_TEST_TIKV_PD_ENDPOINTS"
NEEDS_PROCESSES = {"kill-atomicity", "kill-durability"}
NEIGHBOURS = [b"check", b"check.", b"check0", b"\x00", b"\xff\xff", b"brain/other/k"]


@dataclass(frozen=True)
class DoubleTarget(EngineTarget):
    """Opens the TiKV engine on a FakeTikv, through open_tikv as brain does."""

    cluster: FakeTikv = field(default_factory=FakeTikv)

    def open(self, slot: str) -> Engine:
        return open_tikv(pd_endpoints="double:2379", key_prefix=f"check/{slot}/", connector=self.cluster.connect, **self.options)


def _check_result(target: EngineTarget, check) -> None:
    result = run_check(target, check)
    if result.status == SKIP:
        pytest.skip(result.detail)
    assert result.status != FAIL, result.line()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_check_on_the_double(check):
    if check.name in NEEDS_PROCESSES:
        pytest.skip(f"{check.name} needs a TiKV shared with a helper process: set {ENV}")
    cluster = FakeTikv()
    cluster.max_response_bytes = 4 << 20

    async def neighbours():
        client = cluster.client()
        txn = await client.begin()
        for k in NEIGHBOURS:
            await txn.put(k, b"not the check's")
        await txn.commit()

    asyncio.run(neighbours())
    _check_result(DoubleTarget("tikv", {"page_size": 2}, cluster=cluster), check)
    assert cluster.leaked == 0
    # the check's keys stayed under its prefix: the neighbours are untouched
    stored = dict(asyncio.run(cluster.raw()))
    assert all(stored.get(k) == b"not the check's" for k in NEIGHBOURS)
    assert all(k in NEIGHBOURS or k.startswith(f"check/{check.name}/".encode()) for k in stored)


# -- a real TiKV cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def real_tikv():
    endpoints = os.environ.get(ENV, "").strip()
    if not endpoints:
        pytest.skip(f"no TiKV cluster: set {ENV}=host:2379[,...] to run the suite against one")
    from engines.tikv.checking import delete_prefix, run_prefix

    options: dict[str, Any] = {"pd_endpoints": endpoints}
    prefix = run_prefix({"key_prefix": "brain-pytest/"})
    yield options, prefix
    asyncio.run(delete_prefix(options, prefix))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_check_on_real_tikv(real_tikv, check):
    from engines.tikv.checking import run_target

    options, prefix = real_tikv
    _check_result(run_target(options, prefix), check)


def test_real_tikv_prefixes_are_cleaned_up(real_tikv):
    from engines.tikv.checking import delete_prefix

    options, prefix = real_tikv

    async def main():
        engine = open_tikv(**options, key_prefix=prefix + "cleanup/")
        wb = WriteBatch()
        for i in range(2500):
            wb.put(b"k%05d" % i, b"v")
        await engine.write(wb)
        assert len(await engine.scan(b"", None, keys_only=True)) == 2500
        assert await delete_prefix(options, prefix + "cleanup/") == 2500
        assert await engine.scan(b"", None) == []
        await engine.close()

    asyncio.run(main())
