"""A file or directory that a sync pass cannot read is not a deletion: its last synced
state stays in the folder's head for every other device, and nothing is removed here.
(Before, a folder made unreadable by a chmod, or a file locked by another program, was
committed as deleted, and every other device deleted it.) Real files, a real engine
against the in-memory server; the permission errors are injected, since the tests run
as root, for whom chmod does not deny a read."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client import localfs
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, flat
from anysync.client.sync.state import Folder, SyncState
from tests.unit.fakes import MemoryRemote

DEVICE = engine.Device(1, "dev", "host")


@pytest.fixture
def folder(tmp_path: Path, repo: Repository, state: StateDB) -> Iterator[Folder]:
    root = tmp_path / "Folder"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b.txt").write_bytes(b"in a directory")
    (root / "c.txt").write_bytes(b"a file")
    yield SyncState(state).add_folder("f", root, engine.folder_ref(repo, "f"))


def head_paths(
    repo: Repository, remote: MemoryRemote, state: StateDB, folder: Folder
) -> set[bytes]:
    _, head = RefBook(remote, repo, state).head(folder.ref)
    assert head is not None
    return set(flat.load(repo, head.commit.tree))


def denied(exc_path: str) -> OSError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), exc_path)


def test_an_unreadable_directory_and_file_are_not_deleted_anywhere(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    folder: Folder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine.run_pass(repo, remote, state, folder, DEVICE)
    everything = {b"a", b"a/b.txt", b"c.txt"}
    assert head_paths(repo, remote, state, folder) == everything
    (folder.path / "c.txt").write_bytes(b"changed, but cannot be read now")

    real_children, real_open = localfs.children, localfs.open_file

    def children(dir_fd: int) -> list[bytes]:
        if os.readlink(f"/proc/self/fd/{dir_fd}") == str(folder.path / "a"):
            raise denied("a")
        return real_children(dir_fd)

    def open_file(dir_fd: int, name: bytes):  # type: ignore[no-untyped-def]
        if name == b"c.txt":
            raise denied("c.txt")
        return real_open(dir_fd, name)

    monkeypatch.setattr(localfs, "children", children)
    monkeypatch.setattr(localfs, "open_file", open_file)
    result = engine.run_pass(repo, remote, state, folder, DEVICE)
    assert head_paths(repo, remote, state, folder) == everything
    assert sorted(result.warnings) == [
        "cannot read a: Permission denied",
        "cannot read c.txt: Permission denied",
    ]
    assert (folder.path / "a" / "b.txt").read_bytes() == b"in a directory"

    monkeypatch.undo()  # readable again: the change is synced, nothing was lost
    engine.run_pass(repo, remote, state, folder, DEVICE)
    _, head = RefBook(remote, repo, state).head(folder.ref)
    assert head is not None
    tree = flat.load(repo, head.commit.tree)
    assert set(tree) == everything
    c = tree[b"c.txt"]
    assert b"".join(repo.stream(c.chunks, c.size)) == b"changed, but cannot be read now"
