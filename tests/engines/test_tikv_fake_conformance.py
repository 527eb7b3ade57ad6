"""The engine conformance suite on the TiKV engine over the real tikv-client
and a fake PD + TiKV (tests/tikv_fake) speaking TiKV's wire protocol.

Unlike the in-process double (test_tikv_conformance.py), this runs every
check, the two SIGKILL ones included: the fake is a process of its own, so
a writer killed mid-commit leaves its locks in the fake, and the reader
that reopens the prefix must get them resolved (KvCleanup / KvResolveLock)
before it can read. (Whether a kill lands mid-commit is left to chance
here; test_tikv_fake_client.py kills a client there every time.) Each check runs under its own key prefix
of one fake cluster, as `brain engine-check --engine tikv` runs them on a
real cluster. Skips, saying so, where tikv-client has no wheel.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest
from tikv_fake.process import FakeTikvProcess, start_fake, tikv_client_missing

from engines.conformance import CHECKS, run_check
from engines.conformance.runner import FAIL, SKIP
from engines.tikv.checking import delete_prefix, run_prefix, run_target


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeTikvProcess, dict[str, Any], str]]:
    if (why := tikv_client_missing()) is not None:
        pytest.skip(why)
    fake = start_fake(Path(tmp_path_factory.mktemp("fake-tikv")))
    options: dict[str, Any] = {"pd_endpoints": fake.pd_endpoint}
    yield fake, options, run_prefix({"key_prefix": "brain-pytest/"})
    fake.stop()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_check_on_fake_tikv(fake_cluster, check):
    fake, options, prefix = fake_cluster
    result = run_check(run_target(options, prefix), check)
    if result.status == SKIP:
        pytest.skip(result.detail)
    assert result.status != FAIL, f"{result.line()}\nfake's log:\n{fake.log_tail()}"


def test_fake_prefix_cleanup(fake_cluster):
    _, options, prefix = fake_cluster
    assert asyncio.run(delete_prefix(options, prefix)) >= 0
    from engines.tikv import open_tikv

    async def leftover() -> list:
        engine = open_tikv(**options, key_prefix=prefix)
        try:
            return await engine.scan(b"", None, keys_only=True)
        finally:
            await engine.close()

    assert asyncio.run(leftover()) == []
