"""The executor killed at every instant: after settlement, every path's record describes
the disk, or both are as before the pass (docs/design.md §8.7). No server: the plan holds
moves, removals, directories and symlinks (no downloads), on a real directory and a real
state.db; the kill is an exception raised by the N-th mutating call."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from anysync.client import localfs
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import execute
from anysync.client.sync.flat import Flat
from anysync.client.sync.plan import plan
from anysync.client.sync.state import Record, SyncState


class Crash(BaseException):
    """A kill: nothing after it runs (not an Exception, so no handler catches it)."""


def link(path: bytes, target: bytes) -> TreeEntry:
    return TreeEntry(path.rpartition(b"/")[2], EntryType.SYMLINK, 0o777, 1, target=target)


def d(path: bytes) -> TreeEntry:
    return TreeEntry(path.rpartition(b"/")[2], EntryType.DIR, 0o755, 0)


BEFORE: Flat = {
    b"a": link(b"a", b"A"),  # renamed to c
    b"gone": link(b"gone", b"G"),  # deleted
    b"t": d(b"t"),  # becomes a symlink
    b"t/x": link(b"t/x", b"X"),
    b"s": link(b"s", b"S"),  # becomes a directory
    b"k": link(b"k", b"mine"),  # edited here (record: K0), edited there: a conflict
}
AFTER: Flat = {
    b"c": link(b"c", b"A"),
    b"t": link(b"t", b"T"),
    b"s": d(b"s"),
    b"s/new": link(b"s/new", b"N"),
    b"n": d(b"n"),
    b"k": link(b"k", b"theirs"),
    b"k (conflict)": link(b"k (conflict)", b"mine"),
}


def scan(root: Path) -> tuple[Flat, dict[bytes, localfs.StatKey]]:
    disk: Flat = {}
    stats = {}
    fd = localfs.open_root(root)
    try:
        for item in localfs.walk(fd):
            if stat.S_ISDIR(item.st.st_mode):
                disk[item.rel] = d(item.rel)
            else:
                target = os.readlink(os.path.join(root, os.fsdecode(item.rel)))
                disk[item.rel] = link(item.rel, os.fsencode(target))
            stats[item.rel] = localfs.stat_key(item.st)
    finally:
        os.close(fd)
    return disk, stats


def materialise(root: Path, tree: Flat) -> None:
    for p, e in sorted(tree.items()):
        full = root / os.fsdecode(p)
        if e.type is EntryType.DIR:
            full.mkdir()
        else:
            full.symlink_to(os.fsdecode(e.target))


def run_once(
    tmp_path: Path, crash_after: int | None, monkeypatch: pytest.MonkeyPatch, late: bool = False
) -> int:
    """One pass killed before the mutating call number `crash_after` + 1 (or, `late`,
    right after it: the change made, its record not saved), then the next pass's checks."""
    root = tmp_path / "folder"
    root.mkdir(parents=True)
    materialise(root, BEFORE)
    db = StateDB(tmp_path / "state.db")
    state = SyncState(db)
    state.add_folder("F", root, "s-f")
    disk, stats = scan(root)
    rows = {p: Record(e, stats[p]) for p, e in disk.items()}
    rows[b"k"] = Record(link(b"k", b"K0"), stats[b"k"])
    state.save_records("F", rows, set())
    old_records = state.records("F")
    calls = 0
    real = {n: getattr(localfs, n) for n in ("move", "remove", "make_dir", "write_symlink")}

    def counted(name: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if crash_after is not None and calls > crash_after and not late:
                raise Crash
            out = real[name](*args, **kwargs)
            if crash_after is not None and calls > crash_after:
                raise Crash
            return out

        return call

    for name in real:
        monkeypatch.setattr(localfs, name, counted(name))
    todo = plan(AFTER, disk, stats, old_records, lambda _p, _e: True)
    fd = localfs.open_root(root)
    try:
        execute.Executor(None, fd, todo, state, "F").run()  # type: ignore[arg-type]
    except Crash:
        pass
    finally:
        os.close(fd)
        monkeypatch.undo()
    # The next pass: scan, settle, then every record must describe the disk, or the
    # path and its record must be untouched.
    disk2, stats2 = scan(root)
    records = state.records("F")
    execute.settle(state, "F", disk2, stats2, records, lambda _c: True)
    assert state.records("F") == records
    for p in disk2.keys() | records.keys() | old_records.keys():
        untouched = disk.get(p) == disk2.get(p) and records.get(p) == old_records.get(p)
        # Removed for a type change, its new entry not written: the old record makes it
        # a local delete of the old version against the new one, which wins the merge.
        if p not in disk2 and p in AFTER and records.get(p) == old_records.get(p):
            untouched = True
        if p in disk2 and p in records:
            described = execute._holds(disk2[p], records[p].entry)
        else:
            described = p not in disk2 and p not in records
        assert described or untouched, (crash_after, p, disk2.get(p), records.get(p))
    if crash_after is None:
        assert disk2.keys() == AFTER.keys() and not state.journal("F")[0]
    db.close()
    return calls


def test_a_kill_at_any_instant_leaves_records_that_describe_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = run_once(tmp_path / "full", None, monkeypatch)
    assert total >= 7
    for n in range(total):
        run_once(tmp_path / f"crash{n}", n, monkeypatch)
        run_once(tmp_path / f"late{n}", n, monkeypatch, late=True)
