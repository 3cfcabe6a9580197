"""Watch mode's passes read only what changed (#15): the watcher names the paths its
inotify events touched, and a pass given them (run_pass `changed`) reads those and takes
every other path from its record, once the folder's last pass in this process settled
everything. Real files, a real engine against the in-memory server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from anysync.client import localfs
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, flat
from anysync.client.sync.state import Folder, SyncState
from anysync.client.sync.watch import Watcher
from anysync.types import Ref
from tests.unit.fakes import MemoryRemote

DEVICE = engine.Device(1, "dev", "host")


@pytest.fixture
def folder(tmp_path: Path, repo: Repository, state: StateDB) -> Folder:
    root = tmp_path / "Folder"
    for d in ("a", "d"):
        (root / d).mkdir(parents=True)
        for n in range(3):
            (root / d / f"{n}.txt").write_bytes(b"%s %d" % (d.encode(), n))
    (root / "c.txt").write_bytes(b"top")
    return SyncState(state).add_folder("f", root, engine.folder_ref(repo, "f"))


def head(repo: Repository, remote: MemoryRemote, state: StateDB, folder: Folder) -> flat.Flat:
    _, snap = RefBook(remote, repo, state).head(folder.ref)
    assert snap is not None
    return flat.load(repo, snap.commit.tree)


def lstats(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The names the scan stats from now on."""
    seen: list[bytes] = []
    real = localfs.lstat_in

    def counting(dir_fd: int, name: bytes):  # type: ignore[no-untyped-def]
        seen.append(name)
        return real(dir_fd, name)

    monkeypatch.setattr(localfs, "lstat_in", counting)
    return seen


def test_a_pass_reads_only_the_changed_paths(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    folder: Folder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine.run_pass(repo, remote, state, folder, DEVICE)
    before = head(repo, remote, state, folder)
    (folder.path / "c.txt").write_bytes(b"top, edited")
    (folder.path / "d" / "1.txt").write_bytes(b"edited, not named")
    seen = lstats(monkeypatch)
    result = engine.run_pass(repo, remote, state, folder, DEVICE, frozenset({b"c.txt"}))
    assert seen == [b"c.txt"]
    assert result.uploaded_files == 1
    after = head(repo, remote, state, folder)
    assert after[b"c.txt"].chunks != before[b"c.txt"].chunks
    assert after[b"d/1.txt"] == before[b"d/1.txt"]  # not named: as recorded
    # A pass that reads every path (the periodic one) finds it.
    engine.run_pass(repo, remote, state, folder, DEVICE)
    assert head(repo, remote, state, folder)[b"d/1.txt"] != before[b"d/1.txt"]


def test_deletions_and_new_directories_named_by_events(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    folder: Folder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine.run_pass(repo, remote, state, folder, DEVICE)
    (folder.path / "a" / "0.txt").unlink()
    (folder.path / "x" / "y").mkdir(parents=True)
    (folder.path / "x" / "y" / "z.txt").write_bytes(b"new")
    changed = frozenset({b"a/0.txt", b"x/y/z.txt"})  # no event named x or x/y
    seen = lstats(monkeypatch)
    engine.run_pass(repo, remote, state, folder, DEVICE, changed)
    paths = set(head(repo, remote, state, folder))
    assert b"a/0.txt" not in paths
    assert {b"x", b"x/y", b"x/y/z.txt", b"a/1.txt", b"d/2.txt"} <= paths
    assert sorted(seen) == [b"0.txt", b"x", b"y", b"z.txt"]  # x widened to its new top


def test_the_first_pass_and_one_after_an_unsettled_pass_read_everything(
    repo: Repository,
    remote: MemoryRemote,
    state: StateDB,
    folder: Folder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = engine.run_pass(repo, remote, state, folder, DEVICE, frozenset())
    assert result.uploaded_files == 7  # the first pass of this Folder: every path
    (folder.path / "a" / ".anysync-tmp-0123456789abcdef").write_bytes(b"a killed write's")
    engine.run_pass(repo, remote, state, folder, DEVICE)  # removes it: not settled
    (folder.path / "d" / "2.txt").write_bytes(b"edited")
    seen = lstats(monkeypatch)
    result = engine.run_pass(repo, remote, state, folder, DEVICE, frozenset())
    assert len(seen) == 9 and result.uploaded_files == 1  # every path
    (folder.path / "d" / "0.txt").write_bytes(b"edited, not named")
    seen.clear()
    engine.run_pass(repo, remote, state, folder, DEVICE, frozenset())
    assert seen == []  # settled: nothing named, nothing read


class NoRefs:
    """A server whose ref stream stays open and quiet until cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def watch_refs(self, names: Sequence[str] = ()) -> NoRefs:
        return self

    def __iter__(self) -> Iterator[Ref | None]:
        self.cancelled.wait()
        return iter(())

    def cancel(self) -> None:
        self.cancelled.set()


def test_the_watcher_names_what_changed(tmp_path: Path) -> None:
    root = tmp_path / "Folder"
    (root / "d").mkdir(parents=True)
    (root / "old.txt").write_bytes(b"old")
    watcher = Watcher([root], NoRefs(), [])
    taken: list[frozenset[bytes] | None] = []

    def one_pass() -> None:
        taken.append(watcher.take_changes(root))
        if len(taken) == 1:
            (root / "d" / "new.txt").write_bytes(b"new")
            (root / "old.txt").rename(root / "d" / "moved.txt")
        elif b"d/moved.txt" in (taken[-1] or ()) or len(taken) > 5:
            watcher.stop()

    thread = threading.Thread(target=watcher.run, args=(one_pass,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert taken[0] is None  # the first pass reads everything
    named = set().union(*(t or () for t in taken[1:]))
    assert {b"d/new.txt", b"old.txt", b"d/moved.txt"} <= named
    assert all(t is not None for t in taken[1:])


def test_lost_events_make_the_next_pass_read_everything(tmp_path: Path) -> None:
    root = tmp_path / "Folder"
    root.mkdir()
    watcher = Watcher([root], NoRefs(), [])
    taken: list[frozenset[bytes] | None] = []

    def one_pass() -> None:
        taken.append(watcher.take_changes(root))
        if len(taken) == 1:
            (root / "new.txt").write_bytes(b"new")
            # What watchdog's inotify emitter logs when the kernel dropped events.
            logging.getLogger("watchdog.observers.inotify_c").warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
        else:
            watcher.stop()

    thread = threading.Thread(target=watcher.run, args=(one_pass,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert taken == [None, None]


def test_records_read_again_decode_only_the_changed_rows(
    repo: Repository, remote: MemoryRemote, state: StateDB, folder: Folder
) -> None:
    engine.run_pass(repo, remote, state, folder, DEVICE)
    sync = SyncState(state)
    rows: dict = {}  # type: ignore[type-arg]
    first = sync.records("f", rows)
    (folder.path / "c.txt").write_bytes(b"top, edited")
    engine.run_pass(repo, remote, state, folder, DEVICE)
    second = sync.records("f", rows)
    assert second == sync.records("f")  # the same records as decoding every row
    assert second[b"c.txt"] is not first[b"c.txt"]
    assert all(second[p] is first[p] for p in first if p != b"c.txt")
