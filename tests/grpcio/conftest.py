from __future__ import annotations

import pytest


@pytest.fixture
def brain(tmp_path):
    """brain served by grpcio's asyncio server: overrides tests/conftest.py's
    fixture for every test collected under tests/grpcio/."""
    from servers import brain_server

    srv = brain_server(str(tmp_path), "--transport", "grpcio").start()
    yield srv
    srv.stop()
