"""Restore's path handling: selecting a sub-path, refusing hostile names, never writing
through a symlink or a file where a directory should be, and directory metadata."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import restore
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import Snapshot
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.restore import Existing, Overwrite
from anysync.errors import DiskFull, HostilePath, NotFound
from anysync.types import BlobId, BlobKind
from tests.unit.fakes import KEYS, MemoryRemote


@pytest.fixture
def repo() -> Iterator[Repository]:
    r = Repository(MemoryRemote(), KEYS)
    yield r
    r.close()


def file(repo: Repository, name: bytes, data: bytes, mode: int = 0o640) -> TreeEntry:
    chunks = (repo.save(BlobKind.DATA, data),) if data else ()
    return TreeEntry(name, EntryType.FILE, mode, 1_000_000_000, len(data), chunks=chunks)


def directory(
    repo: Repository, name: bytes, children: list[TreeEntry], mode: int = 0o750, mtime: int = 7
) -> TreeEntry:
    sub = repo.save_tree(children)
    return TreeEntry(name, EntryType.DIR, mode, mtime * 1_000_000_000, subtree=sub)


def sample(repo: Repository) -> list[TreeEntry]:
    """top/ (0o751) → mid/ (0o711) → leaf.txt, other.txt; top/x.txt; root.txt"""
    mid = directory(
        repo,
        b"mid",
        [file(repo, b"leaf.txt", b"leaf"), file(repo, b"other.txt", b"other")],
        mode=0o711,
        mtime=20,
    )
    top = directory(repo, b"top", [mid, file(repo, b"x.txt", b"x")], mode=0o751, mtime=30)
    entries = [file(repo, b"root.txt", b"root"), top]
    repo.finish()
    return entries


def restorer(repo: Repository) -> restore._Restorer:
    return restore._Restorer(repo, Progress("restored", io.StringIO(), enabled=False))


def restore_into(
    repo: Repository, target: Path, entries: list[TreeEntry], include: str = ""
) -> restore.RestoreStats:
    prefix: list[TreeEntry] = []
    if include:
        entries, prefix = restore._select(repo, entries, include)
    r = restorer(repo)
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        r.restore_into(fd, prefix, entries)
    finally:
        r.close()
        os.close(fd)
    return r.stats


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# ---------------------------------------------------------------- _select


def test_select_walks_down_to_the_include(repo: Repository) -> None:
    entries = sample(repo)
    top = entries[1]
    for spec in ("top/mid/leaf.txt", "/top/mid/leaf.txt", "top//mid/leaf.txt/"):
        chosen, leading = restore._select(repo, entries, spec)
        assert [e.name for e in chosen] == [b"leaf.txt"]
        assert [e.name for e in leading] == [b"top", b"mid"]
        assert leading[0] == top
    chosen, leading = restore._select(repo, entries, "top")
    assert (chosen, leading) == ([top], [])


@pytest.mark.parametrize("spec", ["", "/", "//"])
def test_select_of_nothing_is_everything(repo: Repository, spec: str) -> None:
    entries = sample(repo)
    assert restore._select(repo, entries, spec) == (entries, [])


def test_select_of_a_missing_path(repo: Repository) -> None:
    entries = sample(repo)
    with pytest.raises(NotFound, match=r"^top/nope is not in this snapshot; see `anysync ls`$"):
        restore._select(repo, entries, "top/nope")
    with pytest.raises(NotFound, match=r"^top/mid/leaf.txt/more is not in this snapshot"):
        restore._select(repo, entries, "top/mid/leaf.txt/more")


def test_select_through_a_file(repo: Repository) -> None:
    entries = sample(repo)
    with pytest.raises(
        NotFound, match=r"^root.txt/x is not in this snapshot \(root.txt is not a directory\)$"
    ):
        restore._select(repo, entries, "root.txt/x")


def test_select_through_a_directory_without_subtree(repo: Repository) -> None:
    broken = TreeEntry(b"d", EntryType.DIR, 0o755, 0, subtree=None)
    with pytest.raises(NotFound, match=r"\(d is not a directory\)"):
        restore._select(repo, [broken], "d/x")


# ---------------------------------------------------------------- restoring


def test_a_whole_tree(repo: Repository, tmp_path: Path) -> None:
    stats = restore_into(repo, tmp_path, sample(repo))
    assert files_under(tmp_path) == {
        "root.txt": b"root",
        "top/x.txt": b"x",
        "top/mid/leaf.txt": b"leaf",
        "top/mid/other.txt": b"other",
    }
    assert (stats.files, stats.dirs, stats.failed) == (4, 2, [])
    assert (tmp_path / "top").stat().st_mode & 0o7777 == 0o751
    assert (tmp_path / "top" / "mid").stat().st_mode & 0o7777 == 0o711
    assert (tmp_path / "top").stat().st_mtime_ns == 30_000_000_000
    assert (tmp_path / "top" / "mid").stat().st_mtime_ns == 20_000_000_000


def test_an_include_brings_its_leading_directories(repo: Repository, tmp_path: Path) -> None:
    stats = restore_into(repo, tmp_path, sample(repo), "top/mid/leaf.txt")
    assert files_under(tmp_path) == {"top/mid/leaf.txt": b"leaf"}
    assert (stats.files, stats.failed) == (1, [])
    # each leading directory gets its own mode and mtime
    assert (tmp_path / "top").stat().st_mode & 0o7777 == 0o751
    assert (tmp_path / "top" / "mid").stat().st_mode & 0o7777 == 0o711
    assert (tmp_path / "top").stat().st_mtime_ns == 30_000_000_000
    assert (tmp_path / "top" / "mid").stat().st_mtime_ns == 20_000_000_000


def test_an_include_into_an_existing_directory(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "top" / "mid").mkdir(parents=True)
    (tmp_path / "top" / "keep").write_bytes(b"mine")
    restore_into(repo, tmp_path, sample(repo), "top/mid")
    assert files_under(tmp_path) == {
        "top/keep": b"mine",
        "top/mid/leaf.txt": b"leaf",
        "top/mid/other.txt": b"other",
    }


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"../x", b"a\0b", b"x" * 1025])
def test_hostile_names_are_refused_before_anything_is_written(
    repo: Repository, tmp_path: Path, name: bytes
) -> None:
    target = tmp_path / "t"
    target.mkdir()
    entries = [TreeEntry(name, EntryType.SYMLINK, 0o777, 0, target=b"/etc")]
    with pytest.raises(HostilePath):
        restore_into(repo, target, entries)
    assert list(tmp_path.rglob("*")) == [target]


def test_a_long_name_is_fine(repo: Repository, tmp_path: Path) -> None:
    entries = [file(repo, b"y" * 255, b"ok")]
    repo.finish()
    restore_into(repo, tmp_path, entries)
    assert (tmp_path / ("y" * 255)).read_bytes() == b"ok"


@pytest.mark.parametrize("include", ["", "top/mid"])
def test_never_through_a_symlink_where_a_directory_goes(
    repo: Repository, tmp_path: Path, include: str
) -> None:
    target, elsewhere = tmp_path / "t", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    (target / "top").symlink_to(elsewhere)
    entries = sample(repo)
    if include:
        with pytest.raises(Exception, match="refusing to restore into top: it exists and is not"):
            restore_into(repo, target, entries, include)
    else:
        stats = restore_into(repo, target, entries)
        assert stats.failed == [
            (
                "top",
                "refusing to restore into top: it exists and is not a directory "
                "(never writing through a symlink)",
            )
        ]
        assert files_under(target) == {"root.txt": b"root"}
    assert list(elsewhere.iterdir()) == []


def test_a_file_where_a_directory_goes_fails_that_directory_only(
    repo: Repository, tmp_path: Path
) -> None:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "mid").write_bytes(b"a file")
    stats = restore_into(repo, tmp_path, sample(repo))
    assert [p for p, _ in stats.failed] == ["top/mid"]
    assert "top/mid: it exists and is not a directory" in stats.failed[0][1]
    assert files_under(tmp_path) == {"root.txt": b"root", "top/mid": b"a file", "top/x.txt": b"x"}


def test_a_missing_subtree_fails_that_directory_by_name(repo: Repository, tmp_path: Path) -> None:
    missing = TreeEntry(b"gone", EntryType.DIR, 0o755, 0, subtree=BlobId(b"\5" * 32))
    ok = file(repo, b"ok", b"fine")
    repo.finish()
    stats = restore_into(repo, tmp_path, [missing, ok])
    assert [p for p, _ in stats.failed] == ["gone"]
    assert files_under(tmp_path) == {"ok": b"fine"}


def test_an_os_error_fails_that_entry_by_name(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [TreeEntry(b"link", EntryType.SYMLINK, 0o777, 0, target=b"t"), file(repo, b"f", b"1")]
    repo.finish()

    def no_symlinks(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(restore.os, "symlink", no_symlinks)
    stats = restore_into(repo, tmp_path, entries)
    assert stats.failed == [("link", "Operation not permitted")]
    assert files_under(tmp_path) == {"f": b"1"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_stops_the_restore(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    entries = [TreeEntry(b"link", EntryType.SYMLINK, 0o777, 0, target=b"t")]

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(restore.os, "symlink", full)
    with pytest.raises(DiskFull, match="cannot restore link: no space left"):
        restore_into(repo, tmp_path, entries)


def test_directory_metadata_failure_is_reported_by_path(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fchmod = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        if mode == 0o711:
            raise OSError(errno.EPERM, "Operation not permitted")
        real_fchmod(fd, mode)

    monkeypatch.setattr(restore.os, "fchmod", fchmod)
    stats = restore_into(repo, tmp_path, sample(repo))
    assert stats.failed == [("top/mid", "Operation not permitted")]
    assert (tmp_path / "top").stat().st_mode & 0o7777 == 0o751


def test_names_are_exact_spaces_included(repo: Repository, tmp_path: Path) -> None:
    entries = [file(repo, b" spaced X", b"s"), file(repo, b"spaced", b"t")]
    repo.finish()
    for spec in (" spaced X", "/ spaced X/"):
        chosen, leading = restore._select(repo, entries, spec)
        assert ([e.name for e in chosen], leading) == ([b" spaced X"], [])


def test_a_symlink_is_made_inside_the_target(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "t"
    target.mkdir()
    link = TreeEntry(b"link", EntryType.SYMLINK, 0o777, 5_000_000_000, target=b"../x")
    stats = restore_into(repo, target, [link])
    assert (stats.symlinks, stats.failed) == (1, [])
    assert os.readlink(target / "link") == "../x"
    assert os.lstat(target / "link").st_mtime_ns == 5_000_000_000
    assert list(elsewhere.iterdir()) == []


def test_a_file_with_a_missing_chunk_fails_by_its_path(repo: Repository, tmp_path: Path) -> None:
    lost = TreeEntry(b"lost", EntryType.FILE, 0o644, 0, 3, chunks=(BlobId(b"\6" * 32),))
    top = directory(repo, b"top", [lost, file(repo, b"ok", b"yes")])
    repo.finish()
    stats = restore_into(repo, tmp_path, [top])
    assert [p for p, _ in stats.failed] == ["top/lost"]
    assert files_under(tmp_path) == {"top/ok": b"yes"}


def test_a_symlinked_leading_directory_is_named_in_full(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "mid").symlink_to(tmp_path)
    with pytest.raises(Exception, match="refusing to restore into top/mid: it exists"):
        restore_into(repo, tmp_path, sample(repo), "top/mid/leaf.txt")


def test_a_leading_directory_that_is_not_utf8(repo: Repository, tmp_path: Path) -> None:
    inner = directory(repo, b"\xffdir", [file(repo, b"f", b"data")])
    repo.finish()
    stats = restore_into(repo, tmp_path, [inner], os.fsdecode(b"\xffdir/f"))
    assert stats.failed == []
    assert (tmp_path / os.fsdecode(b"\xffdir") / "f").read_bytes() == b"data"


def test_directory_metadata_is_applied_deepest_first(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[int] = []
    real_fchmod = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            applied.append(mode)
        real_fchmod(fd, mode)

    monkeypatch.setattr(restore.os, "fchmod", fchmod)
    restore_into(repo, tmp_path, sample(repo))
    assert applied == [0o711, 0o751]  # mid before top


def test_errors_without_an_errno_are_reported_by_their_text(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def odd(*args: object, **kwargs: object) -> None:
        raise OSError("something odd")

    monkeypatch.setattr(restore.os, "symlink", odd)
    monkeypatch.setattr(restore.os, "fchmod", odd)
    link = TreeEntry(b"link", EntryType.SYMLINK, 0o777, 0, target=b"t")
    d = directory(repo, b"d", [])
    repo.finish()
    stats = restore_into(repo, tmp_path, [d, link])
    assert stats.failed == [("link", "something odd"), ("d", "something odd")]
    # a directory whose own mode could not be applied stays private
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700


def test_a_lost_top_tree_fails_the_whole_snapshot_by_name(tmp_path: Path) -> None:
    """The server lost the pack of the snapshot's top tree: nothing below it can be
    named, so the restore reports the whole snapshot as failed (exit 11), not exit 7."""
    remote = MemoryRemote()
    repo = Repository(remote, KEYS)
    try:
        root = repo.save_tree(sample(repo))
        repo.finish()
        del remote.packs[remote.index[root].pack_id]
        snap = Snapshot(BlobId(b"\1" * 32), Commit("backup", root, (), "r-a", 1, 1, 1, "d", "h"))
        stats = restore.run_restore(
            repo,
            snap,
            tmp_path,
            [],
            Progress("restored", io.StringIO(), enabled=False),
            restore.Overwrite.NEVER,
        )
    finally:
        repo.close()
    assert stats.failed == [
        (
            "(every file of the snapshot)",
            f"pack {remote.index[root].pack_id.hex()[:8]} is missing or damaged on the server",
        )
    ]
    assert list(tmp_path.iterdir()) == []


def test_leftover_temp_files_are_removed_where_restore_writes(
    repo: Repository, tmp_path: Path
) -> None:
    """A killed restore's temp files go on the next restore, in each directory it writes
    into; only entries with the engine's temp prefix, and never through a symlink."""
    target, elsewhere = tmp_path / "t", tmp_path / "elsewhere"
    (target / "top" / "mid").mkdir(parents=True)
    (target / "untouched").mkdir()
    elsewhere.mkdir()
    (elsewhere / "precious").write_bytes(b"keep me")
    (target / ".anysync-tmp-0001").write_bytes(b"partial")
    (target / "top" / "mid" / ".anysync-tmp-0002").write_bytes(b"partial")
    (target / "top" / ".anysync-tmp-link").symlink_to(elsewhere / "precious")
    (target / "top" / ".anysync-tmp-dir").mkdir()  # not a file: left alone
    (target / "top" / "mine.anysync-tmp-x").write_bytes(b"not the prefix")
    (target / "untouched" / ".anysync-tmp-0003").write_bytes(b"not written into")
    stats = restore_into(repo, target, sample(repo))
    assert stats.failed == []
    assert files_under(target) == {
        "root.txt": b"root",
        "top/x.txt": b"x",
        "top/mine.anysync-tmp-x": b"not the prefix",
        "top/mid/leaf.txt": b"leaf",
        "top/mid/other.txt": b"other",
        "untouched/.anysync-tmp-0003": b"not written into",
    }
    assert (target / "top" / ".anysync-tmp-dir").is_dir()
    assert not os.path.lexists(target / "top" / ".anysync-tmp-link")
    assert (elsewhere / "precious").read_bytes() == b"keep me"


# ------------------------------------------------------------ what is already there


def test_what_is_already_there_is_compared_by_size_mtime_and_link(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    os.utime(f, ns=(7_000_000_000, 7_000_000_000))
    (tmp_path / "l").symlink_to("there")
    st_f, st_l = os.lstat(f), os.lstat(tmp_path / "l")
    file = TreeEntry(b"f", EntryType.FILE, 0o644, 7_000_000_000, 5)
    link = TreeEntry(b"l", EntryType.SYMLINK, 0o777, 0, target=b"there")
    assert restore.compare_existing(None, file, None) is Existing.ABSENT
    assert restore.compare_existing(st_f, file, None) is Existing.SAME
    assert restore.compare_existing(st_f, replace(file, size=6), None) is Existing.DIFFERENT
    assert restore.compare_existing(st_f, replace(file, mtime_ns=1), None) is Existing.DIFFERENT
    assert restore.compare_existing(st_l, link, b"there") is Existing.SAME
    assert restore.compare_existing(st_l, link, b"elsewhere") is Existing.DIFFERENT
    # A symlink where the snapshot has a file (and the reverse) is never "the same".
    assert restore.compare_existing(st_l, file, b"there") is Existing.DIFFERENT
    assert restore.compare_existing(st_f, link, None) is Existing.DIFFERENT


def test_overwrite_modes() -> None:
    writes = {(m, e) for m in Overwrite for e in Existing if restore.should_write(m, e)}
    assert writes == {
        (Overwrite.NEVER, Existing.ABSENT),
        (Overwrite.IF_CHANGED, Existing.ABSENT),
        (Overwrite.IF_CHANGED, Existing.DIFFERENT),
        (Overwrite.ALWAYS, Existing.ABSENT),
        (Overwrite.ALWAYS, Existing.DIFFERENT),
        (Overwrite.ALWAYS, Existing.SAME),
    }


def test_includes_inside_another_include_are_dropped() -> None:
    assert restore.outermost(["a/b", "a", "/c/", "c/d/e", "ab"]) == ["a", "ab", "c"]
    assert restore.outermost([]) == []


def test_two_includes_under_a_read_only_directory_are_both_written(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--include go/mod/a --include go/mod/b` with mod at 0o555 (Go's module cache):
    the modes are applied once, after every include, never between them. (Root ignores
    the mode, so the modes applied are recorded rather than tripped over.)"""
    a = directory(repo, b"a", [file(repo, b"f", b"1")])
    b = directory(repo, b"b", [file(repo, b"g", b"2")])
    mod = directory(repo, b"mod", [a, b], mode=0o555)
    entries = [directory(repo, b"go", [mod])]
    repo.finish()
    applied: list[tuple[str, int]] = []
    real_fchmod = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        applied.append((os.readlink(f"/proc/self/fd/{fd}"), mode))
        real_fchmod(fd, mode)

    monkeypatch.setattr(restore.os, "fchmod", fchmod)
    snap = Snapshot(
        BlobId(b"\2" * 32), Commit("backup", repo.save_tree(entries), (), "r", 1, 1, 1, "d", "h")
    )
    repo.finish()
    stats = restore.run_restore(
        repo, snap, tmp_path, ["go/mod/a", "go/mod/b"],
        Progress("restored", io.StringIO(), enabled=False), Overwrite.NEVER,
    )  # fmt: skip
    assert stats.failed == [] and stats.files == 2
    assert files_under(tmp_path) == {"go/mod/a/f": b"1", "go/mod/b/g": b"2"}
    modes = [m for path, m in applied if path.endswith("/go/mod")]
    assert modes == [0o555]  # once, at the end
