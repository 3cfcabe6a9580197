"""What a backup leaves out (client/exclude.py): patterns against absolute paths,
cache directories by their tag, other file systems by device. Real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anysync.client.exclude import CACHEDIR_SIGNATURE, Exclusions
from anysync.errors import UsageError


def _ex(ex: Exclusions, path: Path) -> bool:
    return ex.excluded(os.fsencode(path), os.lstat(path))


def test_patterns_match_like_gitignore_against_the_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "src" / "node_modules").mkdir(parents=True)
    (tmp_path / "Downloads").mkdir()
    for f in ("a.iso", "keep.iso", "src/main.py", "notes.txt"):
        (tmp_path / f).write_text("x")
    ex = Exclusions(
        ["*.iso", "!keep.iso", "node_modules/", f"{tmp_path}/Downloads", "# a comment", ""]
    )
    assert _ex(ex, tmp_path / "a.iso")
    assert not _ex(ex, tmp_path / "keep.iso")
    assert _ex(ex, tmp_path / "src" / "node_modules")
    assert _ex(ex, tmp_path / "Downloads")
    assert not _ex(ex, tmp_path / "src" / "main.py")
    assert not _ex(ex, tmp_path / "notes.txt")
    assert not Exclusions(["# only a comment", "  "]).active


def test_a_cache_directory_needs_the_real_signature(tmp_path: Path) -> None:
    tagged, fake, plain = tmp_path / "tagged", tmp_path / "fake", tmp_path / "plain"
    for d in (tagged, fake, plain):
        d.mkdir()
    (tagged / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# made by a browser\n")
    (fake / "CACHEDIR.TAG").write_bytes(b"not the signature at all, sorry\n")
    ex = Exclusions(caches=True)
    assert _ex(ex, tagged) and not _ex(ex, fake) and not _ex(ex, plain)
    assert not _ex(Exclusions(), tagged)


def test_other_devices_are_left_out_only_with_one_file_system(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    here = os.stat(tmp_path).st_dev
    assert not _ex(Exclusions(devices=frozenset({here})), tmp_path / "d")
    assert _ex(Exclusions(devices=frozenset({here + 1})), tmp_path / "d")
    # A file is never a mount point the walk could descend into.
    assert not _ex(Exclusions(devices=frozenset({here + 1})), tmp_path / "f")


def test_a_fifo_named_cachedir_tag_neither_hangs_nor_counts(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "CACHEDIR.TAG")  # opening it for reading would wait for a writer
    assert not _ex(Exclusions(caches=True), d)


def test_a_pattern_pathspec_cannot_read_is_a_usage_error() -> None:
    for bad in ("!", "a\\"):  # a lone "!", a trailing backslash
        with pytest.raises(UsageError, match="is not a pattern"):
            Exclusions(["*.iso", bad])
