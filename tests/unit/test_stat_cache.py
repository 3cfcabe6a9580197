"""The stat cache: a file is skipped only when inode, size, mtime and ctime all match,
and a row is written only for a file that did not change while it was read."""

from __future__ import annotations

import io
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client import backup
from anysync.client.chunker import Chunker
from anysync.client.progress import Progress
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType
from anysync.client.statedb import CachedStat, StateDB
from anysync.types import BlobId, BlobKind
from tests.unit.test_history import KEYS, MemoryRemote


@pytest.fixture
def repo() -> Iterator[Repository]:
    r = Repository(MemoryRemote(), KEYS)
    yield r
    r.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB(tmp_path / "state.db")
    yield db
    db.close()


def walker(repo: Repository, state: StateDB) -> backup._Walker:
    progress = Progress("backed up", io.StringIO(), enabled=False)
    return backup._Walker(repo, state, Chunker(repo.keys.chunker_seed()), progress)


def ids(*seeds: int) -> tuple[BlobId, ...]:
    return tuple(BlobId(bytes([s]) * 32) for s in seeds)


# ---------------------------------------------------------------- StateDB


def test_put_and_read_back_by_directory(state: StateDB) -> None:
    one = CachedStat(11, 5, 1_000, 2_000, ids(1, 2, 3))
    two = CachedStat(12, 0, 3_000, 4_000, ())
    state.put_stats([(b"/d/a", one), (b"/d/b", two), (b"/d/sub/c", one)])
    assert state.stats_in(b"/d") == {b"a": one, b"b": two}
    assert state.stats_in(b"/d/sub") == {b"c": one}
    assert state.stats_in(b"/other") == {}
    newer = CachedStat(11, 6, 1_001, 2_001, ids(4))
    state.put_stats([(b"/d/a", newer)])  # replaces, never duplicates
    assert state.stats_in(b"/d") == {b"a": newer, b"b": two}


def test_put_stats_is_all_or_nothing(state: StateDB) -> None:
    good = CachedStat(1, 1, 1, 1, ids(1))
    unbindable = CachedStat(object(), 1, 1, 1, ())  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        state.put_stats([(b"/d/a", good), (b"/d/b", unbindable)])
    assert state.stats_in(b"/d") == {}
    state.put_stats([(b"/d/a", good)])  # and the connection is usable again
    assert state.stats_in(b"/d") == {b"a": good}


def test_a_failed_transaction_rolls_back(state: StateDB) -> None:
    with pytest.raises(RuntimeError):
        with state.transaction():
            state.set_seen("r-a", BlobId(b"\1" * 32), 1)
            raise RuntimeError("boom")
    assert state.seen("r-a") is None
    with state.transaction():
        state.set_seen("r-a", BlobId(b"\2" * 32), 2)
    assert state.seen("r-a") == (BlobId(b"\2" * 32), 2)


def test_the_floor_survives_reopening(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db")
    db.set_seen("r-a", BlobId(b"\1" * 32), 7)
    db.set_seen("r-b", BlobId(b"\2" * 32), 1)
    db.set_seen("r-a", BlobId(b"\3" * 32), 8)
    db.put_stats([(b"/x/y", CachedStat(1, 2, 3, 4, ids(9, 8)))])
    db.close()
    db = StateDB(tmp_path / "s.db")
    try:
        assert db.seen("r-a") == (BlobId(b"\3" * 32), 8)
        assert db.seen("r-b") == (BlobId(b"\2" * 32), 1)
        assert db.seen("r-c") is None
        assert db.stats_in(b"/x") == {b"y": CachedStat(1, 2, 3, 4, ids(9, 8))}
    finally:
        db.close()


# ---------------------------------------------------------------- the walker's use


def test_an_unchanged_file_is_not_read(repo: Repository, state: StateDB, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"content")
    st = os.lstat(f)
    key = backup._stat_key(st)
    assert key == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cached = CachedStat(*key, ids(5))
    w = walker(repo, state)
    entry = w.entry(os.fsencode(f), b"f", st, cached)
    assert entry is not None
    assert (entry.type, entry.size, entry.chunks) == (EntryType.FILE, 7, ids(5))
    assert (entry.mode, entry.mtime_ns) == (st.st_mode, st.st_mtime_ns)
    assert (w.stats.files, w.stats.bytes, w.stats.files_read, w.stats.bytes_read) == (1, 7, 0, 0)
    assert w.new_stats == []
    assert w.progress.files == 1 and w.progress.bytes == 7


@pytest.mark.parametrize("field", range(4))
def test_any_differing_stat_field_means_reading_again(
    repo: Repository, state: StateDB, tmp_path: Path, field: int
) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"new content")
    st = os.lstat(f)
    key = list(backup._stat_key(st))
    key[field] += 1
    stale = CachedStat(*key, ids(5))
    w = walker(repo, state)
    entry = w.entry(os.fsencode(f), b"f", st, stale)
    assert entry is not None
    assert entry.chunks != ids(5)
    assert entry.size == 11
    repo.finish()
    assert b"".join(repo.load(BlobKind.DATA, c) for c in entry.chunks) == b"new content"
    assert (w.stats.files_read, w.stats.bytes_read, w.stats.bytes) == (1, 11, 11)
    assert w.new_stats == [(os.fsencode(f), CachedStat(*backup._stat_key(st), entry.chunks))]


def test_read_records_what_it_read(repo: Repository, state: StateDB, tmp_path: Path) -> None:
    data = random.Random(7).randbytes(4 * 1024 * 1024)  # several chunks, always the same
    f = tmp_path / "big"
    f.write_bytes(data)
    st = os.lstat(f)
    w = walker(repo, state)
    chunks, size = w._read(os.fsencode(f), st)
    assert size == len(data) and len(chunks) > 1
    repo.finish()
    assert b"".join(repo.load(BlobKind.DATA, c) for c in chunks) == data
    assert w.new_stats == [(os.fsencode(f), CachedStat(*backup._stat_key(st), chunks))]
    assert w.stats.warnings == []


def test_a_file_changed_while_read_is_not_cached(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"before")
    st = os.lstat(f)
    f.write_bytes(b"after, and longer")  # the stat the walker holds is now stale
    w = walker(repo, state)
    chunks, size = w._read(os.fsencode(f), st)
    assert size == len(b"after, and longer")
    assert w.new_stats == []
    assert w.stats.warnings == [f"{f} changed while it was read; backed up as read"]
    assert chunks


def test_a_file_that_grew_only_in_size_is_not_cached(
    repo: Repository, state: StateDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same inode, mtime and ctime, but fewer bytes read than fstat says."""
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    st = os.lstat(f)
    w = walker(repo, state)
    monkeypatch.setattr(w.chunker, "file_chunks", lambda fh, size: iter([b"01234"]))
    chunks, size = w._read(os.fsencode(f), st)
    assert size == 5 and len(chunks) == 1
    assert w.new_stats == []
    assert len(w.stats.warnings) == 1


def test_an_unreadable_file_is_a_warning_not_an_entry(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    f = tmp_path / "gone"
    f.write_bytes(b"x")
    st = os.lstat(f)
    f.unlink()
    w = walker(repo, state)
    assert w.entry(os.fsencode(f), b"gone", st, None) is None
    assert w.stats.files == 0 and w.stats.bytes == 0
    assert w.stats.warnings == [f"cannot read {f}: No such file or directory"]


def test_a_symlink_is_never_followed_when_read(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    w = walker(repo, state)
    with pytest.raises(OSError):
        w._read(os.fsencode(link), os.stat(link))


def test_the_cache_is_used_through_a_directory_walk(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"aaa")
    (d / "b").write_bytes(b"bbb")
    (d / "c").write_bytes(b"cccc")
    st_a = os.lstat(d / "a")
    state.put_stats([(os.fsencode(d / "a"), CachedStat(*backup._stat_key(st_a), ids(3)))])
    w = walker(repo, state)
    entry = w.entry(os.fsencode(d), b"d", os.lstat(d))
    assert entry is not None and entry.subtree is not None
    repo.finish()
    a, b, c = repo.load_tree(entry.subtree)
    assert c.size == 4
    assert a.chunks == ids(3)  # from the cache, not read
    assert b.chunks != ids(3)
    assert (w.stats.files, w.stats.bytes) == (3, 10)
    assert (w.stats.files_read, w.stats.bytes_read) == (2, 7)
    assert [p for p, _ in w.new_stats] == [os.fsencode(d / "b"), os.fsencode(d / "c")]
