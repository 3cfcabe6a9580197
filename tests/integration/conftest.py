from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Client, Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server-home")
    srv.admin("init")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def device_a(tmp_path: Path) -> Client:
    return Client(tmp_path / "device-a")


@pytest.fixture
def device_b(tmp_path: Path) -> Client:
    return Client(tmp_path / "device-b")
