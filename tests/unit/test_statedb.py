"""The client's state.db schema steps: numbered without gaps, a newer schema refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from anysync.client import statedb
from anysync.client.statedb import StateDB
from anysync.errors import LocalStateError


def test_migrations_are_numbered_one_to_n() -> None:
    numbers = [n for n, _ in statedb._migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_a_fresh_database_is_at_the_newest_schema(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    db.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.close()
    assert version == len(statedb._migrations())


def test_a_newer_schema_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDB(path).close()
    newest = len(statedb._migrations())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={newest + 1}")
    conn.close()
    with pytest.raises(LocalStateError, match="newer anysync"):
        StateDB(path)
    # Not taken for corruption: the file is neither moved aside nor rewritten.
    assert path.exists() and not list(tmp_path.glob("state.db.corrupt-*"))


def test_a_gap_in_the_steps_is_a_packaging_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Item:
        def __init__(self, name: str) -> None:
            self.name = name

        def read_text(self, encoding: str) -> str:
            return ""

    class Folder:
        def __truediv__(self, _: str) -> Folder:
            return self

        def iterdir(self) -> list[Item]:
            return [Item("0001_a.sql"), Item("0003_c.sql")]

    monkeypatch.setattr(statedb.resources, "files", lambda _: Folder())
    with pytest.raises(RuntimeError, match="not numbered"):
        statedb._migrations()
