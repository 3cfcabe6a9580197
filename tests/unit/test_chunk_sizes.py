"""Chunk sizes (tree format version 2) from every writer: a backup's and a sync scan's file
entries carry the plaintext size of each chunk, the stat cache and the sync records keep
them, and a record written before sizes existed changes nothing for sync."""

from __future__ import annotations

import io
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import backup, localfs, statedb
from anysync.client.chunker import Chunker
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import flat
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.plan import plan
from anysync.client.sync.scan import Scan, scan
from anysync.client.sync.state import Record, SyncState
from anysync.types import BlobId, BlobKind
from tests.unit.fakes import KEYS, MemoryRemote

ORIGIN = backup.Origin(1, "dev", "host")
BIG = random.Random(3).randbytes(3 * 1024 * 1024)  # several chunks


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """src/{big, small, empty, d/inner, link}"""
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "big").write_bytes(BIG)
    (root / "small").write_bytes(b"small file")
    (root / "empty").write_bytes(b"")
    (root / "d" / "inner").write_bytes(b"inner file")
    (root / "link").symlink_to("big")
    return root


def files_of(repo: Repository, tree_id: BlobId) -> dict[bytes, TreeEntry]:
    return {p: e for p, e in flat.load(repo, tree_id).items() if e.type is EntryType.FILE}


def assert_sizes_are_the_chunks(repo: Repository, entries: dict[bytes, TreeEntry]) -> None:
    for path, e in entries.items():
        contents = [repo.load(BlobKind.DATA, c) for c in e.chunks]
        assert e.chunk_sizes == tuple(len(c) for c in contents), path
        assert sum(e.chunk_sizes) == e.size, path


def back_up(remote: MemoryRemote, state: StateDB, root: Path) -> backup.BackupResult:
    repo = Repository(remote, KEYS)
    try:
        progress = Progress("b", io.StringIO(), enabled=False)
        return backup.run_backup(repo, remote, state, [root], ORIGIN, progress)
    finally:
        repo.close()


def test_a_backups_file_entries_carry_their_chunk_sizes(
    remote: MemoryRemote, state: StateDB, repo: Repository, src: Path
) -> None:
    first = back_up(remote, state, src)
    files = files_of(repo, first.snapshot.commit.tree)
    assert set(files) == {b"src/big", b"src/small", b"src/empty", b"src/d/inner"}
    assert len(files[b"src/big"].chunk_sizes) > 1
    assert files[b"src/empty"].chunk_sizes == ()
    assert_sizes_are_the_chunks(repo, files)
    # The second backup reads nothing: the stat cache gives the same chunks and sizes,
    # hence the same trees (a cache without sizes would write other trees).
    second = back_up(remote, state, src)
    assert second.stats.files_read == 0
    assert second.snapshot.commit.tree == first.snapshot.commit.tree


@pytest.fixture
def sync_state(state: StateDB, src: Path) -> SyncState:
    s = SyncState(state)
    s.add_folder("F", src, "s-f")
    return s


def scan_of(src: Path, repo: Repository, records: dict[bytes, Record] | None = None) -> Scan:
    root_fd = localfs.open_root(src)
    try:
        return scan(root_fd, IgnoreRules([]), set(), records or {}, repo, Chunker(5), frozenset())
    finally:
        os.close(root_fd)


def records_of(disk: Scan) -> dict[bytes, Record]:
    return {p: Record(e, disk.stats[p]) for p, e in disk.entries.items()}


def test_a_sync_scan_fills_sizes_and_its_records_keep_them(
    repo: Repository, sync_state: SyncState, src: Path
) -> None:
    disk = scan_of(src, repo)
    repo.finish()
    files = {p: e for p, e in disk.entries.items() if e.type is EntryType.FILE}
    assert len(files[b"big"].chunk_sizes) > 1
    assert_sizes_are_the_chunks(repo, files)
    records = records_of(disk)
    sync_state.save_records("F", records, set())
    assert sync_state.records("F") == records
    sync_state.journal_begin("F", {b"big": files[b"big"], b"gone": None})
    assert sync_state.journal("F") == ({b"big": files[b"big"], b"gone": None}, None)
    again = scan_of(src, repo, sync_state.records("F"))
    assert again.files_read == 0 and again.entries == disk.entries


def test_a_record_without_sizes_is_no_change(
    repo: Repository, state: StateDB, sync_state: SyncState, src: Path
) -> None:
    """A record written before sizes existed: the file is not read again, nothing is
    planned on disk, and the record is written again with the sizes of the merge."""
    disk = scan_of(src, repo)
    sync_state.save_records("F", records_of(disk), set())
    state.execute("UPDATE sync_files SET chunk_sizes = x''")
    old = sync_state.records("F")
    assert old[b"big"].entry.chunk_sizes == ()
    now = scan_of(src, repo, old)
    assert now.files_read == 0
    assert all(flat.same(now.entries[p], e) for p, e in disk.entries.items())
    merged = disk.entries  # the head, written with sizes
    todo = plan(merged, now.entries, now.stats, old, lambda p, e: True)
    assert todo.actions == [] and todo.drop == set()
    assert todo.keep[b"big"].entry.chunk_sizes == disk.entries[b"big"].chunk_sizes


def test_sizes_that_do_not_fit_a_record_read_as_not_known(
    repo: Repository, state: StateDB, sync_state: SyncState, src: Path
) -> None:
    disk = scan_of(src, repo)
    sync_state.save_records("F", records_of(disk), set())
    state.execute("UPDATE sync_files SET chunk_sizes = ?", (statedb.pack_sizes([1]),))
    assert sync_state.records("F")[b"big"].entry.chunk_sizes == ()
    assert sync_state.records("F")[b"small"].entry.chunk_sizes == ()  # 1 is not its size


@pytest.fixture
def schema_6(tmp_path: Path) -> Iterator[Path]:
    """A state.db as the version before chunk sizes left it: a record and a cached stat."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, sql in statedb._migrations()[:6]:
        conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
    conn.execute("INSERT INTO sync_folders (name, path, ref) VALUES ('F', x'2f66', 's-f')")
    conn.execute(
        "INSERT INTO sync_files VALUES ('F', x'61', 1, 420, 5, 3, ?, x'', 7, 8, 9, 3)",
        (b"\1" * 32,),
    )
    conn.execute(
        "INSERT INTO stat_cache VALUES (x'2f64', x'61', 1, 3, 5, 6, ?, x'00')", (b"\1" * 32,)
    )
    conn.close()
    yield path


def test_the_migration_keeps_records_and_drops_the_stat_cache(schema_6: Path) -> None:
    db = StateDB(schema_6)
    try:
        [(version,)] = db.execute("PRAGMA user_version").fetchall()
        assert version == len(statedb._migrations()) >= 7
        [record] = SyncState(db).records("F").values()
        assert (record.entry.size, record.entry.chunk_sizes) == (3, ())
        assert db.execute("SELECT count(*) FROM stat_cache").fetchone() == (0,)
    finally:
        db.close()
