"""`anysync versions` after forget (client/sync/versions.py): edit commits are not
versions, and the folder states a counting edit forgot are gone from the list."""

from __future__ import annotations

from pathlib import Path

import pytest

from anysync.client import forget
from anysync.client.forget import Request
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, versions
from anysync.client.sync.state import SyncState
from anysync.errors import NotFound
from tests.unit.test_forget import ME, HistoryRemote
from tests.unit.test_forget import remote as remote  # the fixture, with ref_history

DEVICE = engine.Device(1, "dev", "host")


def test_versions_skip_edits_and_forgotten_states(
    repo: Repository, remote: HistoryRemote, state: StateDB, refs: RefBook, tmp_path: Path
) -> None:
    root = tmp_path / "Folder"
    root.mkdir()
    folder = SyncState(state).add_folder("f", root, engine.folder_ref(repo, "f"))
    for text in (b"one\n", b"two\n", b"three\n"):
        (root / "a.txt").write_bytes(text)
        engine.run_pass(repo, remote, state, folder, DEVICE)

    def listed() -> list[versions.Version]:
        counting = forget.CountingEdits(remote, folder.ref)
        return versions.versions(repo, remote, state, folder, b"a.txt", pytest.fail, counting)

    one, two, three = reversed(listed())
    (out,) = forget.run_forget(
        repo, refs, remote, Request(ids=(two.snapshot.id.hex(),)), ME, pytest.fail
    )
    assert out.edit is not None
    assert [v.snapshot for v in listed()] == [three.snapshot, one.snapshot]
    with pytest.raises(NotFound, match=f"^version {two.snapshot.id.short()} was forgotten on "):
        versions.find_version(
            repo, remote, state, folder, b"a.txt", two.snapshot.id.hex(),
            forget.CountingEdits(remote, folder.ref),
        )  # fmt: skip
    # an edit that does not count forgets nothing, and is no version either
    remote.rows = [r for r in remote.rows if r.commit_id != out.edit.id]
    warnings: list[str] = []
    shown = versions.versions(repo, remote, state, folder, b"a.txt", warnings.append, set())
    assert [v.snapshot for v in shown] == [three.snapshot, two.snapshot, one.snapshot]
    assert warnings == ["forget record by device desk ignored: desk had no manage right"]
    # the next pass builds on the edit: nothing changed, nothing to commit
    assert engine.run_pass(repo, remote, state, folder, DEVICE).committed is None
