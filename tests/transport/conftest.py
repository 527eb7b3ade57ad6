from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echo import ServerThread  # noqa: E402


@pytest.fixture
def echo_server():
    srv = ServerThread().start()
    yield srv
    srv.stop()


@pytest.fixture
def brain(tmp_path):
    """brain served by the h2 transport: overrides tests/conftest.py's
    fixture for every test collected under tests/transport/, so the
    project's own suites (imported by test_h2_suites.py) run against it."""
    from servers import brain_server

    srv = brain_server(str(tmp_path), "--transport", "h2").start()
    yield srv
    srv.stop()
