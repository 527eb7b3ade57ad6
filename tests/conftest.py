from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc_channels  # noqa: E402
from servers import brain_server, etcd_server  # noqa: E402
from tikv_fake.process import fake_tikv  # noqa: E402,F401  (a fake PD + TiKV process, for any test)

grpc_channels.install()


@pytest.fixture
def etcd(tmp_path):
    srv = etcd_server(str(tmp_path)).start()
    yield srv
    srv.stop()


@pytest.fixture
def brain(tmp_path):
    srv = brain_server(str(tmp_path)).start()
    yield srv
    srv.stop()
