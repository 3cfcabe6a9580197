"""Shared test setup: an isolated environment and a weak KDF (tests only, like borg)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import s3server
from tests.s3server import S3Server


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ANYSYNC_PASSWORD", raising=False)
    monkeypatch.delenv("ANYSYNC_HOME", raising=False)
    monkeypatch.delenv("ANYSYNC_SERVER_HOME", raising=False)
    yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3 server (SeaweedFS) for the whole test session."""
    server = s3server.start(tmp_path_factory.mktemp("s3") / "data")
    try:
        yield server
    finally:
        server.stop()
