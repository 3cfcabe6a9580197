"""Fixtures shared by the unit tests of the repository layer: an honest server in memory,
a repository on it, and a fresh state.db."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from tests.unit.fakes import KEYS, MemoryRemote


@pytest.fixture
def remote() -> MemoryRemote:
    return MemoryRemote()


@pytest.fixture
def repo(remote: MemoryRemote) -> Iterator[Repository]:
    r = Repository(remote, KEYS)
    yield r
    r.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def refs(remote: MemoryRemote, repo: Repository, state: StateDB) -> RefBook:
    """The server's refs as commands see them, checked against `state`."""
    return RefBook(remote, repo, state)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC, so conflict-copy stamps are the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
