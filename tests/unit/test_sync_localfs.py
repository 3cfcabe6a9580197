"""The local file-system module: never follows a symlink, never replaces a changed file,
leaves no temp file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anysync.client import localfs
from anysync.errors import IntegrityError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "d").mkdir(parents=True)
    (r / "d" / "f").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("outside")
    (r / "link").symlink_to(outside)
    return r


def test_walk_lists_a_symlink_and_never_goes_through_it(root: Path) -> None:
    fd = localfs.open_root(root)
    try:
        assert [i.rel for i in localfs.walk(fd)] == [b"d/f", b"d", b"link"]
        assert list(localfs.walk(fd, b"link")) == []
    finally:
        os.close(fd)


def test_nothing_is_written_or_removed_through_a_symlink(root: Path) -> None:
    fd = localfs.open_root(root)
    try:
        with pytest.raises(IntegrityError):
            localfs.write_file(fd, b"link/new", [b"x"], 1, 0o644, 0, None)
        with pytest.raises(IntegrityError):
            localfs.remove(fd, b"link/secret", None, is_dir=False)
        assert localfs.lstat(fd, b"link") is not None
    finally:
        os.close(fd)
    assert (root.parent / "outside" / "secret").read_text() == "outside"
    assert not (root.parent / "outside" / "new").exists()


def test_a_changed_file_is_not_replaced_and_no_temp_is_left(root: Path) -> None:
    fd = localfs.open_root(root)
    try:
        seen = localfs.current_at(fd, b"d/f")
        assert seen is not None
        (root / "d" / "f").write_text("edited meanwhile")
        with pytest.raises(localfs.ChangedMeanwhile):
            localfs.write_file(fd, b"d/f", [b"new"], 3, 0o644, 0, seen)
        assert (root / "d" / "f").read_text() == "edited meanwhile"
        assert not [p for p in root.rglob("*") if localfs.is_temp(os.fsencode(p.name))]
    finally:
        os.close(fd)


def test_remove_temps_removes_only_temp_files(root: Path) -> None:
    (root / "d" / os.fsdecode(localfs.temp_name())).write_bytes(b"partial")
    (root / "d" / "keep.tmp").write_bytes(b"not ours")
    fd = localfs.open_root(root)
    try:
        assert localfs.remove_temps(fd) == 1
    finally:
        os.close(fd)
    assert sorted(p.name for p in (root / "d").iterdir()) == ["f", "keep.tmp"]


def test_a_non_empty_directory_is_not_removed(root: Path) -> None:
    fd = localfs.open_root(root)
    try:
        with pytest.raises(localfs.NotEmpty):
            localfs.remove(fd, b"d", None, is_dir=True)
    finally:
        os.close(fd)
    assert (root / "d" / "f").exists()
