from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Client, Server


def running_server(tmp_path: Path, request: pytest.FixtureRequest, store: str) -> Iterator[Server]:
    srv = Server(tmp_path / "server-home")
    srv.admin("init")
    if store == "s3":
        srv.use_s3(request.getfixturevalue("s3_server"), f"b{uuid.uuid4().hex[:16]}")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A real anysync-server on the local store."""
    yield from running_server(tmp_path, request, "local")


@pytest.fixture(params=["local", "s3"])
def any_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """The same, once on the local store and once on S3 through presigned URLs."""
    yield from running_server(tmp_path, request, request.param)


@pytest.fixture
def device_a(tmp_path: Path) -> Client:
    return Client(tmp_path / "device-a")


@pytest.fixture
def device_b(tmp_path: Path) -> Client:
    return Client(tmp_path / "device-b")
