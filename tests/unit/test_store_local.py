"""What LocalStore adds to the contract: its layout and its temp-file hygiene."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from anysync.store import LocalStore


def test_keys_are_paths_under_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("u/ab/abcd", io.BytesIO(b"data"), 4)
    assert (tmp_path / "u" / "ab" / "abcd").read_bytes() == b"data"


def test_failed_put_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(Exception, match="ended after"):
        store.put("u/ab/abcd", io.BytesIO(b"da"), 4)
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_temp_files_are_never_listed_and_stale_ones_are_removed(tmp_path: Path) -> None:
    LocalStore(tmp_path)
    stale, fresh = tmp_path / ".tmp" / "old.part", tmp_path / ".tmp" / "new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    store = LocalStore(tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # may belong to a writer in another process
    assert list(store.list()) == []


def test_adopt_moves_a_temp_file_into_place(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    path = store.temp_path()
    path.write_bytes(b"data")
    store.adopt("u/ab/abcd", path, 4)
    assert not path.exists()
    assert b"".join(store.get_range("u/ab/abcd")) == b"data"


@pytest.mark.parametrize(("where", "size"), [(".tmp", 5), ("elsewhere", 4)])
def test_adopt_refuses_a_wrong_size_or_place_and_removes_the_file(
    tmp_path: Path, where: str, size: int
) -> None:
    store = LocalStore(tmp_path / "objects")
    path = store.temp_path() if where == ".tmp" else tmp_path / "file.part"
    path.write_bytes(b"data")
    with pytest.raises(Exception, match=r"not 5|temporary area"):
        store.adopt("u/ab/abcd", path, size)
    assert not path.exists()
    assert list(store.list()) == []
