"""The stat cache: a file is skipped only when inode, size, mtime and ctime all match a
row whose MAC verifies, and a row is written only for a file that did not change while
it was read."""

from __future__ import annotations

import io
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from anysync import crypto
from anysync.cli.progress import Progress
from anysync.client import backup, localfs, statedb
from anysync.client.chunker import Chunker
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType
from anysync.client.statedb import CachedStat, StateDB, local_state_key
from anysync.types import BlobId, BlobKind
from tests.unit.fakes import KEYS, MemoryRemote

KEY = local_state_key(KEYS.id_key)


def walker(repo: Repository, state: StateDB) -> backup._Walker:
    progress = Progress("backed up", io.StringIO(), enabled=False)
    return backup._Walker(repo, state, KEY, Chunker(repo.keys.chunker_seed()), progress)


def ids(*seeds: int) -> tuple[BlobId, ...]:
    return tuple(BlobId(bytes([s]) * 32) for s in seeds)


# ---------------------------------------------------------------- StateDB


def test_put_and_read_back_by_directory(state: StateDB) -> None:
    one = CachedStat(11, 5, 1_000, 2_000, ids(1, 2, 3))
    two = CachedStat(12, 0, 3_000, 4_000, ())
    state.put_stats([(b"/d/a", one), (b"/d/b", two), (b"/d/sub/c", one)], KEY)
    assert state.stats_in(b"/d", KEY) == ({b"a": one, b"b": two}, 0)
    assert state.stats_in(b"/d/sub", KEY) == ({b"c": one}, 0)
    assert state.stats_in(b"/other", KEY) == ({}, 0)
    newer = CachedStat(11, 6, 1_001, 2_001, ids(4))
    state.put_stats([(b"/d/a", newer)], KEY)  # replaces, never duplicates
    assert state.stats_in(b"/d", KEY) == ({b"a": newer, b"b": two}, 0)


def test_put_stats_is_all_or_nothing(state: StateDB) -> None:
    good = CachedStat(1, 1, 1, 1, ids(1))
    unbindable = CachedStat(2**64 - 1, 1, 1, 1, ())  # fits the MAC, not an SQLite INTEGER
    with pytest.raises(OverflowError):
        state.put_stats([(b"/d/a", good), (b"/d/b", unbindable)], KEY)
    assert state.stats_in(b"/d", KEY) == ({}, 0)
    state.put_stats([(b"/d/a", good)], KEY)  # and the connection is usable again
    assert state.stats_in(b"/d", KEY) == ({b"a": good}, 0)


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
    db.put_stats([(b"/x/y", CachedStat(1, 2, 3, 4, ids(9, 8)))], KEY)
    db.close()
    db = StateDB(tmp_path / "s.db")
    try:
        assert db.seen("r-a") == (BlobId(b"\3" * 32), 8)
        assert db.seen("r-b") == (BlobId(b"\2" * 32), 1)
        assert db.seen("r-c") is None
        assert db.stats_in(b"/x", KEY) == ({b"y": CachedStat(1, 2, 3, 4, ids(9, 8))}, 0)
    finally:
        db.close()


# ---------------------------------------------------------------- the walker's use

_open_dirs: list[int] = []


@pytest.fixture(autouse=True)
def _close_dirs() -> Iterator[None]:
    yield
    while _open_dirs:
        os.close(_open_dirs.pop())


def at(path: Path) -> int:
    """An open descriptor of the directory holding `path`, as the walker has one."""
    _open_dirs.append(localfs.open_root(path.parent))
    return _open_dirs[-1]


def test_an_unchanged_file_is_not_read(repo: Repository, state: StateDB, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"content")
    st = os.lstat(f)
    key = localfs.stat_key(st)
    assert key == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cached = CachedStat(*key, ids(5))
    w = walker(repo, state)
    entry = w.entry(at(f), os.fsencode(f), b"f", st, cached)
    assert entry is not None
    assert (entry.type, entry.size, entry.chunks) == (EntryType.FILE, 7, ids(5))
    assert (entry.mode, entry.mtime_ns) == (st.st_mode, st.st_mtime_ns)
    assert (w.stats.files, w.stats.bytes, w.stats.files_read, w.stats.bytes_read) == (1, 7, 0, 0)
    assert w.fresh == {}
    assert w.reused == {os.fsencode(f): ids(5)}  # to be confirmed with the server
    assert w.progress.files == 1 and w.progress.bytes == 7


@pytest.mark.parametrize("field", range(4))
def test_any_differing_stat_field_means_reading_again(
    repo: Repository, state: StateDB, tmp_path: Path, field: int
) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"new content")
    st = os.lstat(f)
    key = list(localfs.stat_key(st))
    key[field] += 1
    stale = CachedStat(*key, ids(5))
    w = walker(repo, state)
    entry = w.entry(at(f), os.fsencode(f), b"f", st, stale)
    assert entry is not None
    assert entry.chunks != ids(5)
    assert entry.size == 11
    repo.finish()
    assert b"".join(repo.load(BlobKind.DATA, c) for c in entry.chunks) == b"new content"
    assert (w.stats.files_read, w.stats.bytes_read, w.stats.bytes) == (1, 11, 11)
    assert entry.chunk_sizes == (11,)
    row = CachedStat(*localfs.stat_key(st), entry.chunks, (11,))
    assert w.fresh == {os.fsencode(f): row}
    assert w.reused == {}


def test_read_records_what_it_read(repo: Repository, state: StateDB, tmp_path: Path) -> None:
    data = random.Random(7).randbytes(4 * 1024 * 1024)  # several chunks, always the same
    f = tmp_path / "big"
    f.write_bytes(data)
    st = os.lstat(f)
    w = walker(repo, state)
    read = w._read(at(f), os.fsencode(f), os.fsencode(f.name), st)
    assert read.size == len(data) and len(read.chunks) > 1
    repo.finish()
    contents = [repo.load(BlobKind.DATA, c) for c in read.chunks]
    assert b"".join(contents) == data
    assert read.chunk_sizes == tuple(len(c) for c in contents)
    assert w.fresh == {
        os.fsencode(f): CachedStat(*localfs.stat_key(st), read.chunks, read.chunk_sizes)
    }
    assert w.stats.warnings == []


def test_a_file_changed_while_read_is_not_cached(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"before")
    st = os.lstat(f)
    f.write_bytes(b"after, and longer")  # the stat the walker holds is now stale
    w = walker(repo, state)
    read = w._read(at(f), os.fsencode(f), os.fsencode(f.name), st)
    assert read.size == len(b"after, and longer") == sum(read.chunk_sizes)
    assert w.fresh == {}
    assert w.stats.warnings == [f"{f} changed while it was read; backed up as read"]
    assert read.chunks


def test_a_file_that_grew_only_in_size_is_not_cached(
    repo: Repository, state: StateDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same inode, mtime and ctime, but fewer bytes read than fstat says."""
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    st = os.lstat(f)
    w = walker(repo, state)
    monkeypatch.setattr(w.chunker, "file_chunks", lambda fh, size: iter([b"01234"]))
    read = w._read(at(f), os.fsencode(f), os.fsencode(f.name), st)
    assert read.size == 5 and len(read.chunks) == 1
    assert w.fresh == {}
    assert len(w.stats.warnings) == 1


def test_an_unreadable_file_is_a_warning_not_an_entry(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    f = tmp_path / "gone"
    f.write_bytes(b"x")
    st = os.lstat(f)
    f.unlink()
    w = walker(repo, state)
    assert w.entry(at(f), os.fsencode(f), b"gone", st, None) is None
    assert w.stats.files == 0 and w.stats.bytes == 0
    assert w.stats.skipped == [backup.Skipped(str(f), "No such file or directory")]
    assert w.stats.partial and w.stats.warnings == []


def test_a_symlink_is_never_followed_when_read(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    w = walker(repo, state)
    with pytest.raises(OSError):
        w._read(at(link), os.fsencode(link), os.fsencode(link.name), os.stat(link))


def test_the_cache_is_used_through_a_directory_walk(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"aaa")
    (d / "b").write_bytes(b"bbb")
    (d / "c").write_bytes(b"cccc")
    st_a = os.lstat(d / "a")
    state.put_stats([(os.fsencode(d / "a"), CachedStat(*localfs.stat_key(st_a), ids(3)))], KEY)
    w = walker(repo, state)
    entry = w.entry(at(d), os.fsencode(d), b"d", os.lstat(d))
    assert entry is not None and entry.subtree is not None
    repo.finish()
    a, b, c = repo.load_tree(entry.subtree)
    assert c.size == 4
    assert a.chunks == ids(3)  # from the cache, not read
    assert b.chunks != ids(3)
    assert (w.stats.files, w.stats.bytes) == (3, 10)
    assert (w.stats.files_read, w.stats.bytes_read) == (2, 7)
    assert list(w.fresh) == [os.fsencode(d / "b"), os.fsencode(d / "c")]
    assert w.reused == {os.fsencode(d / "a"): ids(3)}


# ---------------------------------------------------------------- row MACs (trust case 3)

ROW = CachedStat(11, 5, 1_000, 2_000, ids(1, 2), (2, 3))


def raw_rows(state: StateDB) -> list[tuple[object, ...]]:
    return state.execute("SELECT * FROM stat_cache ORDER BY dir, name").fetchall()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("dir", b"/e"),
        ("name", b"c"),
        ("ino", 12),
        ("size", 6),
        ("mtime_ns", 1_001),
        ("ctime_ns", 2_001),
        ("chunks", b"".join(c.raw for c in ids(2, 1))),
        ("chunks", b"".join(c.raw for c in ids(1))),
        ("chunks", b"".join(c.raw for c in ids(1)) + b"\1"),
        ("chunk_sizes", statedb.pack_sizes([3, 2])),
        ("chunk_sizes", statedb.pack_sizes([])),
        ("chunk_sizes", b"\2\0\0"),
        ("mac", b"\0" * 32),
    ],
)
def test_a_row_changed_in_any_column_is_dropped(state: StateDB, column: str, value: object) -> None:
    state.put_stats([(b"/d/a", ROW), (b"/d/b", ROW)], KEY)
    state.execute(
        f"UPDATE stat_cache SET {column} = ? WHERE name = ?",
        (value, b"a"),
    )
    where = b"/e" if column == "dir" else b"/d"
    rows, damaged = state.stats_in(where, KEY)
    assert damaged == 1 and b"a" not in rows and b"c" not in rows
    assert len(raw_rows(state)) == 1  # deleted: it is not counted again
    assert state.stats_in(b"/d", KEY) == ({b"b": ROW}, 0)


def test_swapped_chunk_lists_fail_both_rows(state: StateDB) -> None:
    state.put_stats([(b"/d/a", ROW), (b"/d/b", CachedStat(11, 5, 1_000, 2_000, ids(3)))], KEY)
    db = state
    a, b = (
        db.execute("SELECT chunks FROM stat_cache WHERE name = ?", (n,)).fetchone()[0]
        for n in (b"a", b"b")
    )
    db.execute("UPDATE stat_cache SET chunks = ? WHERE name = ?", (b, b"a"))
    db.execute("UPDATE stat_cache SET chunks = ? WHERE name = ?", (a, b"b"))
    assert state.stats_in(b"/d", KEY) == ({}, 2)


def test_a_row_made_with_another_key_is_dropped(state: StateDB) -> None:
    state.put_stats([(b"/d/a", ROW)], local_state_key(b"\1" * 32))
    assert state.stats_in(b"/d", KEY) == ({}, 1)


@pytest.mark.parametrize(("column", "value"), [("ino", "text"), ("mac", "text"), ("size", -1)])
def test_a_row_of_the_wrong_type_is_dropped_not_a_crash(
    state: StateDB, column: str, value: object
) -> None:
    state.put_stats([(b"/d/a", ROW)], KEY)
    state.execute(f"UPDATE stat_cache SET {column} = ?", (value,))
    assert state.stats_in(b"/d", KEY) == ({}, 1)


def test_the_mac_frames_its_fields() -> None:
    mac = statedb._row_mac(KEY, b"/d", b"ab", ROW)
    assert mac != statedb._row_mac(KEY, b"/da", b"b", ROW)
    assert mac == statedb._row_mac(KEY, b"/d", b"ab", ROW)
    assert local_state_key(KEYS.id_key) != KEYS.id_key


def test_sizes_that_cannot_be_the_files_are_a_damaged_row(state: StateDB) -> None:
    """A row whose MAC verifies but whose sizes a tree would refuse (a bug, never an
    attacker without the key) is dropped too: its file is read again, never a crash."""
    for sizes in [(2, 2), (5,), (5, 0)]:
        state.put_stats([(b"/d/a", CachedStat(11, 5, 1_000, 2_000, ids(1, 2), sizes))], KEY)
        assert state.stats_in(b"/d", KEY) == ({}, 1)
    assert statedb.unpack_sizes(statedb.pack_sizes([1, 2**32 - 1])) == (1, 2**32 - 1)


def test_the_mac_is_the_documented_format() -> None:
    """docs/design.md §7: a changed layout would silently invalidate every cache."""
    key = bytes(range(32))
    row = CachedStat(2**63 + 5, 7, -1_000, 2_000, ids(1), (7,))
    le = "little"
    message = b"".join(
        [
            b"stat_cache\0",
            (2).to_bytes(4, le) + b"/d",
            (1).to_bytes(4, le) + b"n",
            row.ino.to_bytes(8, le) + row.size.to_bytes(8, le),
            row.mtime_ns.to_bytes(8, le, signed=True) + row.ctime_ns.to_bytes(8, le, signed=True),
            (1).to_bytes(4, le) + ids(1)[0].raw,
            (1).to_bytes(4, le) + (7).to_bytes(4, le),
        ]
    )
    expected = blake3.blake3(message, key=key).digest()
    assert statedb._row_mac(key, b"/d", b"n", row) == expected
    assert local_state_key(KEYS.id_key) == crypto.hkdf(KEYS.id_key, b"anysync v1 local state")


def test_forget_stats_drops_only_those_rows(state: StateDB) -> None:
    state.put_stats([(b"/d/a", ROW), (b"/d/b", ROW), (b"/e/a", ROW)], KEY)
    state.forget_stats([b"/d/a", b"/e/a"])
    assert state.stats_in(b"/d", KEY) == ({b"b": ROW}, 0)
    assert state.stats_in(b"/e", KEY) == ({}, 0)


def test_the_walker_counts_damaged_rows_and_reads_their_files(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for f in (d / "a", d / "sub" / "b"):
        f.write_bytes(b"aaa")
        st = os.lstat(f)
        state.put_stats([(os.fsencode(f), CachedStat(*localfs.stat_key(st), ids(3)))], KEY)
    state.execute("UPDATE stat_cache SET chunks = ?", (ids(4)[0].raw,))
    w = walker(repo, state)
    entry = w.entry(at(d), os.fsencode(d), b"d", os.lstat(d))
    assert entry is not None and w.damaged == 2  # summed over directories
    assert w.stats.files_read == 2 and w.reused == {}


# ---------------------------------------------------------------- skipped paths (trust case 4)


def test_special_files_are_listed_by_kind_and_do_not_make_it_partial(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "pipe")
    os.mknod(tmp_path / "sock", stat.S_IFSOCK | 0o600)
    w = walker(repo, state)
    for name in ("pipe", "sock"):
        path = tmp_path / name
        assert w.entry(at(path), os.fsencode(path), name.encode(), os.lstat(path)) is None
    assert w.stats.skipped == [
        backup.Skipped(str(tmp_path / "pipe"), "fifo", special=True),
        backup.Skipped(str(tmp_path / "sock"), "socket", special=True),
    ]
    assert not w.stats.partial


def test_a_directory_that_cannot_be_listed_is_skipped(
    repo: Repository, state: StateDB, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    st = os.lstat(gone)
    gone.rmdir()
    w = walker(repo, state)
    assert w.entry(at(gone), os.fsencode(gone), b"gone", st) is None
    assert w.stats.skipped == [backup.Skipped(str(gone), "No such file or directory")]
    assert w.stats.partial and w.stats.dirs == 0


# ---------------------------------------------------------------- run_backup's server check


def test_a_reused_chunk_the_server_lost_is_read_again(tmp_path: Path) -> None:
    remote = MemoryRemote()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"content of a")
    (src / "b").write_bytes(b"content of b")
    (src / "c").write_bytes(b"content of c")
    db = StateDB(tmp_path / "state.db")
    origin = backup.Origin(1, "dev", "host")

    def run() -> backup.BackupResult:
        repo = Repository(remote, KEYS)
        try:
            progress = Progress("backed up", io.StringIO(), enabled=False)
            return backup.run_backup(repo, remote, db, [src], origin, progress)
        finally:
            repo.close()

    try:
        assert run().stats.files_read == 3
        rows, _ = db.stats_in(os.fsencode(src), KEY)
        (lost,) = rows[b"a"].chunks
        del remote.index[lost]
        (src / "c").write_bytes(b"changed c")  # read in the first walk, not in the second
        result = run()
        assert (result.stats.files, result.stats.files_read) == (3, 2)
        assert result.stats.warnings == [
            "1 chunk(s) named by the local stat cache are not on the server; read 1 file(s) again"
        ]
        assert lost in remote.index  # uploaded again before the commit
        repo = Repository(remote, KEYS)
        try:
            (top,) = repo.load_tree(repo.load_commit(result.snapshot.id).tree)
            assert top.subtree is not None
            contents = {
                e.name: b"".join(repo.load(BlobKind.DATA, c) for c in e.chunks)
                for e in repo.load_tree(top.subtree)
            }
        finally:
            repo.close()
        assert contents == {b"a": b"content of a", b"b": b"content of b", b"c": b"changed c"}
        assert run().stats.files_read == 0  # every row sound and confirmed again
    finally:
        db.close()


# ---------------------------------------------------------------- staged rows (#15)


def back_up(remote: MemoryRemote, state: StateDB, root: Path) -> backup.BackupResult:
    repo = Repository(remote, KEYS)
    try:
        progress = Progress("b", io.StringIO(), enabled=False)
        origin = backup.Origin(1, "dev", "host")
        return backup.run_backup(repo, remote, state, [root], origin, progress)
    finally:
        repo.close()


def test_a_walk_stages_its_rows_in_state_db_not_in_memory(
    repo: Repository, state: StateDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory must not grow with the number of files read (issue #15)."""
    monkeypatch.setattr(backup, "STAGE_BATCH", 2)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"content %d" % i)
    w = walker(repo, state)
    w.walk([src], [b"src"])
    assert w.staged == []  # every row went to state.db
    staged, _ = state.stats_in(os.fsencode(src), KEY, table="pending_stats")
    assert sorted(staged) == [b"f%d" % i for i in range(5)]
    assert state.stats_in(os.fsencode(src), KEY) == ({}, 0)  # not cached before the commit


def test_rows_staged_by_a_crashed_backup_are_never_cached(
    remote: MemoryRemote, state: StateDB, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"real content")
    lie = CachedStat(*localfs.stat_key(os.lstat(src / "f")), ids(9), (12,))
    state.put_stats([(os.fsencode(src / "f"), lie)], KEY, table="pending_stats")
    result = back_up(remote, state, src)
    assert result.stats.files_read == 1  # the crashed run's row was not reused
    cached, _ = state.stats_in(os.fsencode(src), KEY)
    assert cached[b"f"].chunks != ids(9)
    assert state.stats_in(os.fsencode(src), KEY, table="pending_stats") == ({}, 0)
    assert back_up(remote, state, src).stats.files_read == 0  # promoted after the commit
