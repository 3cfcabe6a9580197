"""Backup and the sync scan never enter an AnySync FUSE mount (a drive or snapshot view)
inside what they walk: reading one would download the repository to store it again.
Where the mounts are is decided apart from the walk (mountinfo, read once per run); here
the list is passed in, and the mounts are plain directories that must stay unread."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import backup, localfs
from anysync.client.chunker import Chunker
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType
from anysync.client.statedb import StateDB, local_state_key
from anysync.client.sync import engine, flat, scan
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.state import Folder, Record, SyncState
from anysync.errors import UsageError
from tests.unit.fakes import KEYS, MemoryRemote

ORIGIN = backup.Origin(1, "dev", "host")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """src/{a.txt, docs/b.txt, docs/Drive/secret.txt}: docs/Drive stands for a mount."""
    root = tmp_path / "src"
    (root / "docs" / "Drive").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "docs" / "b.txt").write_bytes(b"b")
    (root / "docs" / "Drive" / "secret.txt").write_bytes(b"would be downloaded")
    return root


# ---------------------------------------------------------------- deciding


def test_mounts_to_skip_spells_them_as_the_walk_does(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()  # mounts are real paths
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    mounts = [real / "Drive", real / "sub" / "Snap", tmp_path / "elsewhere", real]
    got = backup.mounts_to_skip([tmp_path / "link"], mounts[:3])
    assert got == {
        os.fsencode(tmp_path / "link" / "Drive"),
        os.fsencode(tmp_path / "link/sub/Snap"),
    }
    # A source at or inside a mount is itself skipped.
    assert backup.mounts_to_skip([real / "sub"], [real]) == {os.fsencode(real / "sub")}
    assert backup.mounts_to_skip([real], [real]) == {os.fsencode(real)}
    assert backup.mounts_to_skip([real], [tmp_path / "realm", tmp_path / "re"]) == frozenset()


def test_mounts_in_a_sync_folder() -> None:
    root = Path("/home/u/Folder")
    mounts = [root / "Drive", root / "a" / "Snap", Path("/home/u/Folder2"), Path("/mnt")]
    assert scan.mounts_in(root, mounts) == {b"Drive", b"a/Snap"}
    assert scan.mounts_in(root, [root]) == {b""}
    assert scan.mounts_in(root, [Path("/home")]) == {b""}


def test_the_scan_finds_mounts_by_the_real_path_of_the_open_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = tmp_path.resolve()
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setattr(scan, "anysync_mounts", lambda: [real / "Drive", tmp_path / "x"])
    fd = localfs.open_root(tmp_path / "link")
    try:
        assert scan._mounts_at(fd) == {b"Drive"}
    finally:
        os.close(fd)


# ---------------------------------------------------------------- backup


def test_backup_leaves_a_mount_out_and_lists_it(
    repo: Repository, state: StateDB, src: Path
) -> None:
    mount = os.fsencode(src / "docs" / "Drive")
    progress = Progress("b", io.StringIO(), enabled=False)
    key = local_state_key(KEYS.id_key)
    w = backup._Walker(repo, state, key, Chunker(5), progress, skip=frozenset({mount}))
    root = w.walk([src], [b"src"])
    repo.finish()
    paths = set(flat.load(repo, root))
    assert paths == {b"src", b"src/a.txt", b"src/docs", b"src/docs/b.txt"}
    assert w.stats.files_read == 2
    [skipped] = w.stats.skipped
    assert skipped == backup.Skipped(str(src / "docs" / "Drive"), "AnySync mount", special=True)
    assert not w.stats.partial


def test_backup_refuses_a_source_in_a_mount(
    remote: MemoryRemote, state: StateDB, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup, "anysync_mounts", lambda: [src.resolve() / "docs"])
    repo = Repository(remote, KEYS)
    try:
        progress = Progress("b", io.StringIO(), enabled=False)
        with pytest.raises(
            UsageError, match=r"/Drive is in an AnySync mount; its files are in the repository$"
        ):
            backup.run_backup(repo, remote, state, [src / "docs" / "Drive"], ORIGIN, progress)
        # The run reads mountinfo itself: a mount under the source is left out.
        result = backup.run_backup(repo, remote, state, [src], ORIGIN, progress)
    finally:
        repo.close()
    assert [s.path for s in result.stats.skipped] == [str(src / "docs")]
    assert result.stats.files == 1


# ---------------------------------------------------------------- sync scan


def scan_with(src: Path, repo: Repository, mounts: frozenset[bytes]) -> scan.Scan:
    fd = localfs.open_root(src)
    try:
        return scan.scan(fd, IgnoreRules([]), set(), {}, repo, Chunker(5), mounts)
    finally:
        os.close(fd)


def test_the_scan_leaves_a_mount_alone_as_unknown(repo: Repository, src: Path) -> None:
    disk = scan_with(src, repo, frozenset({b"docs/Drive"}))
    assert set(disk.entries) == {b"a.txt", b"docs", b"docs/b.txt"}
    assert disk.files_read == 2
    # Unknown, not deleted: the pass keeps what it last synced there (engine.managed).
    assert disk.unreadable == {b"docs/Drive"}
    assert disk.warnings == ["not syncing docs/Drive: it is an AnySync mount"]


def test_a_folder_in_a_mount_is_not_scanned(repo: Repository, src: Path) -> None:
    disk = scan_with(src, repo, frozenset({b""}))
    assert disk.entries == {} and disk.files_read == 0 and disk.unreadable == {b""}
    assert disk.warnings == ["not syncing the folder: it is in an AnySync mount"]


def test_pending_reports_nothing_in_a_mount(
    repo: Repository, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = scan_with(src, repo, frozenset())
    records = {p: Record(e, disk.stats[p]) for p, e in disk.entries.items()}
    monkeypatch.setattr(scan, "anysync_mounts", lambda: [src.resolve() / "docs" / "Drive"])
    (src / "docs" / "Drive" / "new.txt").write_bytes(b"new in the mount")
    assert scan.pending(src, IgnoreRules([]), set(), records) == {}
    (src / "a.txt").write_bytes(b"changed")
    assert scan.pending(src, IgnoreRules([]), set(), records) == {b"a.txt": "modified"}
    assert records[b"docs/Drive/secret.txt"].entry.type is EntryType.FILE


# ---------------------------------------------------------------- a whole sync pass

DEVICE = engine.Device(1, "dev", "host")


@pytest.fixture
def folder(src: Path, repo: Repository, state: StateDB) -> Folder:
    return SyncState(state).add_folder("f", src.resolve(), engine.folder_ref(repo, "f"))


def head_paths(repo: Repository, remote: MemoryRemote, state: StateDB, ref: str) -> set[bytes]:
    _, head = RefBook(remote, repo, state).head(ref)
    assert head is not None
    return set(flat.load(repo, head.commit.tree))


EVERYTHING = {b"a.txt", b"docs", b"docs/b.txt", b"docs/Drive", b"docs/Drive/secret.txt"}


@pytest.mark.parametrize("mounted", ["docs/Drive", ""])
def test_a_pass_keeps_what_it_synced_in_a_mount(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    folder: Folder,
    monkeypatch: pytest.MonkeyPatch,
    mounted: str,
) -> None:
    """Mounted over a synced directory (or over the folder): nothing in it is read,
    deleted or added, here or in the head; the rest of the folder syncs on."""
    engine.run_pass(repo, remote, state, folder, DEVICE)
    assert head_paths(repo, remote, state, folder.ref) == EVERYTHING
    mount = folder.path / mounted
    monkeypatch.setattr(scan, "anysync_mounts", lambda: [mount])
    (folder.path / "docs" / "Drive" / "secret.txt").unlink()
    (folder.path / "docs" / "Drive" / "new.txt").write_bytes(b"new")
    (folder.path / "new.txt").write_bytes(b"outside the mount")
    result = engine.run_pass(repo, remote, state, folder, DEVICE)
    what = "the folder: it is in" if mounted == "" else "docs/Drive: it is"
    assert result.warnings == [f"not syncing {what} an AnySync mount"]
    expected = EVERYTHING | ({b"new.txt"} if mounted else set())
    assert head_paths(repo, remote, state, folder.ref) == expected
    assert (folder.path / "new.txt").exists()
