"""Backup's walk and sync's scan descend by directory descriptor: a directory replaced
by a symlink between its lstat and its opening (an attacker racing the walk, or just
bad luck) is skipped with a warning; nothing outside the tree is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anysync.client import localfs
from anysync.client.chunker import Chunker
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.scan import scan
from tests.unit.test_stat_cache import walker


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/d/inner.txt inside the tree; outside/secret.txt outside it."""
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "d" / "inner.txt").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"secret")
    return tmp_path / "root"


def swap_after_lstat(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """root/d turns into a symlink to ../outside right after its lstat."""
    real = localfs.lstat_in

    def lstat_then_swap(dir_fd: int, name: bytes) -> os.stat_result:
        st = real(dir_fd, name)
        if name == b"d" and (root / "d").is_dir() and not (root / "d").is_symlink():
            (root / "d" / "inner.txt").unlink()
            (root / "d").rmdir()
            (root / "d").symlink_to(root.parent / "outside")
        return st

    monkeypatch.setattr(localfs, "lstat_in", lstat_then_swap)


def test_backup_skips_a_directory_swapped_for_a_symlink(
    repo: Repository, state: StateDB, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swap_after_lstat(monkeypatch, tree)
    w = walker(repo, state)
    root_fd = localfs.open_root(tree)
    try:
        assert w.child(root_fd, os.fsencode(tree), b"d") is None
    finally:
        os.close(root_fd)
    [skipped] = w.stats.skipped
    assert skipped.path == str(tree / "d") and "stopped being a directory" in skipped.reason
    assert w.stats.files_read == 0 and w.fresh == {}


def test_sync_scan_skips_a_directory_swapped_for_a_symlink(
    repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swap_after_lstat(monkeypatch, tree)
    root_fd = localfs.open_root(tree)
    try:
        disk = scan(root_fd, IgnoreRules([]), set(), {}, repo, Chunker(1))
    finally:
        os.close(root_fd)
    assert b"d/secret.txt" not in disk.entries and disk.files_read == 0
    assert disk.warnings == ["cannot read d: it is no longer a directory"]
