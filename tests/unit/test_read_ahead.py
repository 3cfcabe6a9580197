"""Backup reads small files on reader threads, ahead of the walk (backup._ReadAhead):
the same entries and contents as reading them in the walk, the big and the cached files
untouched by the readers, and the races of the walk kept: a file that grew past the
limit is read whole, one that vanished is skipped."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from anysync.client import backup, localfs
from anysync.client.repo.repository import Repository
from anysync.client.statedb import CachedStat, StateDB
from anysync.types import BlobId
from tests.unit.test_stat_cache import KEY, walker

CACHED = (BlobId(bytes(32)),)  # the chunk of a stat-cache row: not on the server


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[bytes, str]:
    """Which thread opened each file, by name."""
    seen: dict[bytes, str] = {}
    real = localfs.open_file

    @contextlib.contextmanager
    def recording(dir_fd: int, name: bytes) -> Iterator[BinaryIO]:
        seen[name] = threading.current_thread().name
        with real(dir_fd, name) as f:
            yield f

    monkeypatch.setattr(localfs, "open_file", recording)
    return seen


def walk_dir(
    repo: Repository, state: StateDB, d: Path
) -> tuple[backup._Walker, dict[bytes, bytes]]:
    """Walk directory `d`; returns the walker and each file's content as stored."""
    w = walker(repo, state)
    fd = localfs.open_root(d.parent)
    try:
        entry = w.entry(fd, os.fsencode(d), os.fsencode(d.name), os.lstat(d))
    finally:
        os.close(fd)
        w.close()
    assert entry is not None and entry.subtree is not None
    repo.finish()
    return w, {
        e.name: b"".join(repo.stream(e.chunks, e.size))
        for e in repo.load_tree(entry.subtree)
        if e.chunks != CACHED
    }


def test_small_files_are_read_ahead_big_and_cached_ones_are_not(
    repo: Repository, state: StateDB, tmp_path: Path, opened: dict[bytes, str]
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    files = {b"f%03d" % i: os.urandom(i * 37) for i in range(80)}  # f000 is empty
    files[b"big"] = os.urandom(backup.SMALL_FILE + 1)
    files[b"cached"] = b"in the cache"
    for name, data in files.items():
        (d / os.fsdecode(name)).write_bytes(data)
    st = os.lstat(d / "cached")
    row = CachedStat(*localfs.stat_key(st), CACHED, (len(files[b"cached"]),))
    state.put_stats([(os.fsencode(d / "cached"), row)], KEY)
    del files[b"cached"]  # reused from the row: not read, not stored

    w, stored = walk_dir(repo, state, d)

    assert stored.keys() == files.keys()
    assert stored == files
    assert b"cached" not in opened
    assert opened[b"big"] == "MainThread"
    assert {opened[n] for n in files if n.startswith(b"f")} <= {"read_0", "read_1"}
    assert w.stats.files_read == 81 and w.stats.warnings == []


def test_a_small_file_that_grew_past_the_limit_is_read_whole(
    repo: Repository, state: StateDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "grows").write_bytes(b"small at its lstat")
    big = os.urandom(backup.SMALL_FILE * 3)
    real = localfs.lstat_in

    def lstat_then_grow(dir_fd: int, name: bytes) -> os.stat_result:
        st = real(dir_fd, name)
        if name == b"grows":
            (d / "grows").write_bytes(big)
        return st

    monkeypatch.setattr(localfs, "lstat_in", lstat_then_grow)
    w, stored = walk_dir(repo, state, d)
    assert stored == {b"grows": big}
    assert w.stats.warnings == [f"{d / 'grows'} changed while it was read; backed up as read"]
    assert w.fresh == {}


def test_a_small_file_gone_before_its_read_is_skipped(
    repo: Repository, state: StateDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"stays")
    (d / "b").write_bytes(b"goes")
    real = localfs.lstat_in

    def lstat_then_unlink(dir_fd: int, name: bytes) -> os.stat_result:
        st = real(dir_fd, name)
        if name == b"b":
            (d / "b").unlink()
        return st

    monkeypatch.setattr(localfs, "lstat_in", lstat_then_unlink)
    w, stored = walk_dir(repo, state, d)
    assert stored == {b"a": b"stays"}
    assert w.stats.skipped == [backup.Skipped(str(d / "b"), "No such file or directory")]


def test_closing_waits_for_the_reads_in_flight(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory's descriptor is closed after close(): no read may still use it."""
    running: list[bytes] = []
    finished: list[bytes] = []

    def slow(repo: Repository, dir_fd: int, name: bytes) -> None:
        running.append(name)
        time.sleep(0.05)
        finished.append(name)

    monkeypatch.setattr(backup, "_read_small", slow)
    w = walker(repo, StateDB(tmp_path / "state.db"))
    ahead = backup._ReadAhead(w.readers, repo, -1, [(b"%d" % i, 1) for i in range(10)])
    while not running:
        time.sleep(0.001)
    ahead.close()
    assert sorted(finished) == sorted(running)
    w.close()
