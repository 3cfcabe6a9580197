"""restore-version (client/sync/versions.py): it writes into the sync folder only while
holding the pass lock, so a pass running at the same moment cannot see its temp file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from anysync.client import localfs
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, versions
from anysync.client.sync.state import SyncState
from tests.unit.fakes import MemoryRemote

DEVICE = engine.Device(1, "dev", "host")


def _lock_is_held(home: Path) -> bool:
    fd = os.open(home / "sync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_restore_writes_under_the_pass_lock_and_saves_a_new_version(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "Folder"
    root.mkdir()
    folder = SyncState(state).add_folder("f", root, engine.folder_ref(repo, "f"))
    (root / "a.txt").write_bytes(b"one\n")
    engine.run_pass(repo, remote, state, folder, DEVICE)
    (root / "a.txt").write_bytes(b"two\n")
    engine.run_pass(repo, remote, state, folder, DEVICE)
    first = versions.versions(repo, remote, state, folder, b"a.txt", warn=pytest.fail)[
        -1
    ].snapshot.id.hex()

    held: list[bool] = []
    write_file = localfs.write_file

    def spy(*args: object, **kwargs: object) -> object:
        held.append(_lock_is_held(home))
        return write_file(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(localfs, "write_file", spy)
    result = versions.restore_version(
        repo, remote, state, folder, b"a.txt", first, root / "a.txt", home, DEVICE
    )
    assert held and all(held)
    assert (root / "a.txt").read_bytes() == b"one\n"
    assert result is not None and result.committed is not None
    assert len(versions.versions(repo, remote, state, folder, b"a.txt", warn=pytest.fail)) == 3
    assert not _lock_is_held(home)
