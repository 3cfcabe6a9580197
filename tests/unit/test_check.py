"""client/check.py against the in-memory server: every injected fault is found and
named by snapshot and file; a clean repository is clean. (tests/integration/
test_check.py does the same through the CLI against a real server.)"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import backup
from anysync.client.check import check, report_lines
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.types import BlobId, BlobLocation
from tests.unit.fakes import KEYS, MemoryRemote

ORIGIN = backup.Origin(1, "dev", "host")
A_TXT = random.Random(1).randbytes(3000)


def back_up(remote: MemoryRemote, state: StateDB, src: Path) -> backup.BackupResult:
    repo = Repository(remote, KEYS)
    try:
        return backup.run_backup(
            repo, remote, state, [src], ORIGIN, Progress("b", io.StringIO(), enabled=False)
        )
    finally:
        repo.close()


@pytest.fixture
def two_snapshots(
    tmp_path: Path, remote: MemoryRemote, state: StateDB
) -> tuple[Path, backup.BackupResult, backup.BackupResult]:
    """src/{keep.txt, docs/a.txt}: snapshot 1; then src/new.txt added: snapshot 2."""
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "keep.txt").write_bytes(b"kept in both snapshots")
    (src / "docs" / "a.txt").write_bytes(A_TXT)
    first = back_up(remote, state, src)
    (src / "new.txt").write_bytes(b"only in the second snapshot")
    second = back_up(remote, state, src)
    return src, first, second


def run_check(
    remote: MemoryRemote, state: StateDB, fraction: float = 0.0
) -> tuple[bool, list[str]]:
    repo = Repository(remote, KEYS)
    try:
        result = check(
            RefBook(remote, repo, state), repo, remote, frozenset(), fraction, random.Random(5)
        )
    finally:
        repo.close()
    return result.clean, list(report_lines(result))


def chunk_of(remote: MemoryRemote, content: bytes) -> BlobId:
    bid = Repository(remote, KEYS).blob_id(content)
    assert bid in remote.index
    return bid


def test_a_sound_repository_is_clean_with_and_without_reading_data(
    remote: MemoryRemote, state: StateDB, two_snapshots: object
) -> None:
    assert run_check(remote, state) == (True, [])
    repo = Repository(remote, KEYS)
    result = check(RefBook(remote, repo, state), repo, remote, frozenset(), 1.0)
    repo.close()
    assert result.clean and (result.refs, result.snapshots) == (1, 2)
    assert result.chunks_read == result.chunks == 3


def test_a_lost_index_row_names_the_file_in_every_snapshot_that_has_it(
    remote: MemoryRemote,
    state: StateDB,
    two_snapshots: tuple[Path, backup.BackupResult, backup.BackupResult],
) -> None:
    _, first, second = two_snapshots
    del remote.index[chunk_of(remote, b"kept in both snapshots")]
    clean, lines = run_check(remote, state)
    assert not clean
    why = "part of its content is not in the server's index"
    for snap in (second.snapshot, first.snapshot):
        header = f"backup of {two_snapshots[0]} on host, snapshot {snap.id.short()}"
        assert f"{header}: 1 damaged file(s) or directories" in lines
    assert lines.count(f"  src/keep.txt: {why}") == 2


def test_a_missing_pack_and_a_short_pack_are_found(
    remote: MemoryRemote,
    state: StateDB,
    two_snapshots: tuple[Path, backup.BackupResult, backup.BackupResult],
) -> None:
    src, first, second = two_snapshots
    # The second backup's one pack holds its new file and its directory listings.
    new = remote.index[chunk_of(remote, b"only in the second snapshot")]
    whole = remote.packs.pop(new.pack_id)
    expected = [
        f"backup of {src} on host, snapshot {second.snapshot.id.short()}: "
        "1 damaged file(s) or directories",
        "  (the whole snapshot): its directory listing cannot be read "
        f"(pack {new.pack_id.hex()[:8]} is missing or damaged on the server)",
    ]
    assert run_check(remote, state) == (False, expected)  # the first snapshot is sound
    remote.packs[new.pack_id] = whole[: new.offset + new.length - 1]  # one byte short
    clean, lines = run_check(remote, state)
    assert not clean and lines[0] == expected[0]
    assert first.snapshot.id.short() not in "".join(lines)


def test_a_flipped_byte_is_found_only_by_reading_the_data(
    remote: MemoryRemote,
    state: StateDB,
    two_snapshots: tuple[Path, backup.BackupResult, backup.BackupResult],
) -> None:
    loc: BlobLocation = remote.index[chunk_of(remote, A_TXT)]
    data = bytearray(remote.packs[loc.pack_id])
    data[loc.offset + loc.length // 2] ^= 0x01
    remote.packs[loc.pack_id] = bytes(data)
    assert run_check(remote, state) == (True, [])  # the index and pack look fine
    clean, lines = run_check(remote, state, fraction=1.0)
    assert not clean
    assert any(
        line.startswith("  src/docs/a.txt: part of its content fails to authenticate")
        for line in lines
    )


def test_a_ref_to_a_missing_commit_and_a_lost_old_commit_are_history_damage(
    remote: MemoryRemote,
    state: StateDB,
    two_snapshots: tuple[Path, backup.BackupResult, backup.BackupResult],
) -> None:
    _, first, second = two_snapshots
    del remote.index[first.snapshot.id]  # the older commit is gone
    clean, lines = run_check(remote, state)
    assert not clean
    assert lines[0].startswith("older snapshots of backup of")
    assert f"(the parent of snapshot {second.snapshot.id.short()}" in lines[0]
    remote.force("r-other", BlobId(b"\x07" * 32))  # a ref to a commit that never existed
    clean, lines = run_check(remote, state)
    assert not clean
    assert any("ref r-other" in line and "cannot be read" in line for line in lines)


def test_a_damaged_directory_listing_names_the_directory(
    remote: MemoryRemote,
    state: StateDB,
    two_snapshots: tuple[Path, backup.BackupResult, backup.BackupResult],
) -> None:
    repo = Repository(remote, KEYS)
    _, _, second = two_snapshots
    root = repo.load_tree(second.snapshot.commit.tree)
    (src,) = root
    assert src.subtree is not None
    docs = next(e for e in repo.load_tree(src.subtree) if e.name == b"docs")
    repo.close()
    assert docs.subtree is not None
    del remote.index[docs.subtree]
    clean, lines = run_check(remote, state)
    assert not clean
    assert (
        lines.count(
            "  src/docs: its directory listing cannot be read "
            f"(blob {docs.subtree.short()} is missing from the server)"
        )
        == 2
    )


def test_a_seen_ref_the_server_no_longer_lists_is_damage(
    remote: MemoryRemote,
    state: StateDB,
    two_snapshots: tuple[Path, backup.BackupResult, backup.BackupResult],
) -> None:
    src, _, second = two_snapshots
    del remote.refs[second.snapshot.commit.ref]
    clean, lines = run_check(remote, state)
    assert not clean
    assert lines == [
        f"the server no longer lists backup of {src} on host "
        f"(ref {second.snapshot.commit.ref[:12]}), which this device has seen"
    ]
