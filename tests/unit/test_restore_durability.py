"""Restore's crash safety without an fsync per file: every file is on disk (one
filesystem sync per batch) before the rename that gives it its final name, and a
failure leaves no partial file under a final name."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client import localfs, restore
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import DiskFull, UsageError
from anysync.types import BlobKind
from tests.unit.fakes import KEYS, MemoryRemote
from tests.unit.test_restore_paths import directory, file, files_under, restore_into


@pytest.fixture
def repo() -> Iterator[Repository]:
    r = Repository(MemoryRemote(), KEYS)
    yield r
    r.close()


def big_file(repo: Repository, name: bytes, parts: list[bytes]) -> TreeEntry:
    chunks = tuple(repo.save(BlobKind.DATA, p) for p in parts)
    size = sum(map(len, parts))
    return TreeEntry(name, EntryType.FILE, 0o600, 5_000_000_000, size, chunks=chunks)


class Journal:
    """What restore did to the disk, in order: temp files written, syncs, renames."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, bytes]] = []
        real_write, real_sync, real_rename = localfs.write_temp, localfs.sync_filesystem, os.rename

        def write_temp(*args: object, **kwargs: object) -> bytes:
            tmp = real_write(*args, **kwargs)  # type: ignore[arg-type]
            self.events.append(("write", tmp))
            return tmp

        def sync_filesystem(fd: int) -> None:
            real_sync(fd)
            self.events.append(("sync", b""))

        def rename(src: bytes, dst: bytes, **kwargs: int) -> None:
            real_rename(src, dst, **kwargs)
            self.events.append(("rename", src))

        def fsync(fd: int) -> None:
            self.events.append(("fsync", b""))

        monkeypatch.setattr(localfs, "write_temp", write_temp)
        monkeypatch.setattr(localfs, "sync_filesystem", sync_filesystem)
        monkeypatch.setattr(localfs.os, "rename", rename)
        monkeypatch.setattr(localfs.os, "fsync", fsync)

    def assert_each_synced_before_its_rename(self) -> None:
        written: dict[bytes, int] = {}
        renamed = 0
        for i, (what, tmp) in enumerate(self.events):
            if what == "write":
                written[tmp] = i
            elif what == "rename":
                syncs = [w for w, _ in self.events[written.pop(tmp) : i] if w == "sync"]
                assert syncs, f"{tmp!r} was renamed before any sync after it was written"
                renamed += 1
        assert not written, "written, never renamed"
        assert renamed > 0


def test_files_are_synced_once_per_batch_before_their_rename(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "BATCH_FILES", 4)
    names = [f"f{i:02}".encode() for i in range(10)]
    entries = [
        file(repo, b"a.txt", b"alpha"),
        directory(repo, b"d", [file(repo, n, n * 3) for n in names]),
    ]
    repo.finish()
    journal = Journal(monkeypatch)
    stats = restore_into(repo, tmp_path, entries)
    assert stats.failed == [] and stats.files == 11
    assert files_under(tmp_path) == {"a.txt": b"alpha"} | {f"d/{n.decode()}": n * 3 for n in names}
    journal.assert_each_synced_before_its_rename()
    kinds = [w for w, _ in journal.events]
    assert "fsync" not in kinds  # no fsync per file nor per directory
    # 11 files in batches of 4: 3 syncs before renames, and one for the last renames.
    assert kinds.count("sync") == 4
    assert kinds[-1] == "sync"


def test_a_large_file_is_streamed_then_synced_before_its_rename(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "BATCH_BYTES", 8)
    parts = [b"first part ", b"second part ", b"third"]
    entries = [file(repo, b"small", b"s"), big_file(repo, b"big", parts), file(repo, b"z", b"z")]
    repo.finish()
    journal = Journal(monkeypatch)
    stats = restore_into(repo, tmp_path, entries)
    assert stats.failed == []
    assert files_under(tmp_path) == {"big": b"".join(parts), "small": b"s", "z": b"z"}
    assert os.stat(tmp_path / "big").st_mtime_ns == 5_000_000_000
    journal.assert_each_synced_before_its_rename()
    assert "fsync" not in [w for w, _ in journal.events]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_in_the_writer_stops_the_restore_and_leaves_no_temp_file(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    entries = [file(repo, n, n) for n in (b"a", b"b", b"c")]
    repo.finish()
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if bytes(data) == b"c":
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(localfs.os, "write", write)
    with pytest.raises(DiskFull, match=r"^cannot restore c: no space left on the device"):
        restore_into(repo, tmp_path, entries)
    # a and b were written but not yet synced and renamed: gone too, not left behind.
    assert sorted(os.listdir(tmp_path)) == []


def test_a_failed_sync_renames_nothing(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [file(repo, b"a", b"a"), file(repo, b"b", b"b")]
    repo.finish()

    def sync_filesystem(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(localfs, "sync_filesystem", sync_filesystem)
    with pytest.raises(
        UsageError, match=r"^cannot write the restored files to disk: Input/output error$"
    ):
        restore_into(repo, tmp_path, entries)
    assert os.listdir(tmp_path) == []


def test_a_file_changed_before_its_rename_fails_by_name_and_keeps_the_change(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the write and the deferred rename, someone writes the final name."""
    entries = [file(repo, b"a", b"restored"), file(repo, b"b", b"b")]
    repo.finish()
    real_sync = localfs.sync_filesystem

    def sync_filesystem(fd: int) -> None:
        if not (tmp_path / "a").exists():
            (tmp_path / "a").write_bytes(b"user's")
        real_sync(fd)

    monkeypatch.setattr(localfs, "sync_filesystem", sync_filesystem)
    stats = restore_into(repo, tmp_path, entries)
    assert stats.failed == [("a", restore._CHANGED)]
    assert files_under(tmp_path) == {"a": b"user's", "b": b"b"}


def test_sync_filesystem_flushes_the_filesystem_of_a_descriptor(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        localfs.sync_filesystem(fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        localfs.sync_filesystem(fd)  # closed
    assert raised.value.errno == errno.EBADF
