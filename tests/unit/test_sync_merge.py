"""The three-way merge rules, without I/O."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat
from anysync.client.sync.merge import conflict_name, merge
from anysync.types import BlobId

NOW = 1_767_000_000.0
# 2025-12-29 15:50:56.7 UTC: every field of the time of day differs from the others.
WHEN = 1_767_023_456.7
STAMP = b"2025-12-29 155056"


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Conflict names use local time; pin it so that names can be checked exactly."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def f(path: bytes, content: bytes = b"x", mode: int = 0o644) -> tuple[bytes, TreeEntry]:
    cid = BlobId(content.ljust(32, b"\0")[:32])
    return path, TreeEntry(path.rpartition(b"/")[2], EntryType.FILE, mode, 0, len(content), (cid,))


def d(path: bytes) -> tuple[bytes, TreeEntry]:
    return path, TreeEntry(path.rpartition(b"/")[2], EntryType.DIR, 0o755, 0)


def flat(*items: tuple[bytes, TreeEntry]) -> Flat:
    return dict(items)


def test_one_sided_changes_win() -> None:
    base = flat(f(b"a", b"1"), f(b"b", b"1"), f(b"c", b"1"))
    local = flat(f(b"a", b"2"), f(b"b", b"1"), f(b"new", b"n"))  # edit a, delete c, add new
    remote = flat(f(b"a", b"1"), f(b"b", b"3"), f(b"c", b"1"), f(b"r", b"r"))  # edit b, add r
    m = merge(base, local, remote, "laptop", NOW)
    assert m.conflicts == []
    assert {p: e.chunks[0].raw[:1] for p, e in m.merged.items()} == {
        b"a": b"2",
        b"b": b"3",
        b"new": b"n",
        b"r": b"r",
    }


def test_concurrent_edits_keep_both(utc: None) -> None:
    base = flat(f(b"doc.txt", b"1"))
    m = merge(base, flat(f(b"doc.txt", b"L")), flat(f(b"doc.txt", b"R")), "laptop", WHEN)
    assert m.merged[b"doc.txt"].chunks[0].raw[:1] == b"R"
    [(path, copy)] = m.conflicts
    assert path == b"doc.txt"
    assert copy == b"doc (conflict from laptop " + STAMP + b").txt"
    assert m.merged[copy].name == copy
    assert m.merged[copy].chunks[0].raw[:1] == b"L"
    assert set(m.merged) == {b"doc.txt", copy}


def test_modify_beats_delete_both_ways() -> None:
    base = flat(f(b"a", b"1"), f(b"b", b"1"))
    local = flat(f(b"a", b"2"))  # edited a, deleted b
    remote = flat(f(b"b", b"2"))  # deleted a, edited b
    m = merge(base, local, remote, "laptop", NOW)
    assert m.conflicts == []
    # The edits survive, not the base versions the other side deleted.
    assert m.merged == {b"a": f(b"a", b"2")[1], b"b": f(b"b", b"2")[1]}


def test_identical_additions_are_adopted() -> None:
    m = merge(
        {},
        flat(f(b"same", b"s"), f(b"diff", b"1")),
        flat(f(b"same", b"s"), f(b"diff", b"2")),
        "pc",
        NOW,
    )
    assert [p for p, _ in m.conflicts] == [b"diff"]
    assert b"same" in m.merged


def test_rename_is_delete_plus_add_of_same_content() -> None:
    base = flat(d(b"dir"), f(b"dir/a", b"A"))
    local = flat(d(b"moved"), f(b"moved/a", b"A"))
    m = merge(base, local, base, "pc", NOW)
    assert set(m.merged) == {b"moved", b"moved/a"} and not m.conflicts


def test_file_added_inside_a_directory_deleted_remotely_survives() -> None:
    base = flat(d(b"dir"), f(b"dir/old", b"o"))
    local = flat(d(b"dir"), f(b"dir/old", b"o"), f(b"dir/new", b"n"))
    m = merge(base, local, {}, "pc", NOW)
    assert set(m.merged) == {b"dir", b"dir/new"}


def test_file_versus_directory() -> None:
    base: Flat = {}
    local = flat(f(b"x", b"file"))
    remote = flat(d(b"x"), f(b"x/inner", b"i"))
    m = merge(base, local, remote, "pc", NOW)
    assert m.merged[b"x"].type is EntryType.DIR
    assert len(m.conflicts) == 1 and m.merged[m.conflicts[0][1]].type is EntryType.FILE


def test_conflict_names(utc: None) -> None:
    """`name (conflict from DEVICE YYYY-MM-DD HHMMSS).ext` (docs/design.md), in local time."""
    taken: Flat = {}
    name = conflict_name(b"dir/report.final.pdf", "pc", WHEN, taken)
    assert name == b"dir/report.final (conflict from pc " + STAMP + b").pdf"
    assert (
        conflict_name(b".bashrc", "pc", WHEN, taken) == b".bashrc (conflict from pc " + STAMP + b")"
    )
    assert (
        conflict_name(b"Makefile", "pc", WHEN, taken)
        == b"Makefile (conflict from pc " + STAMP + b")"
    )
    taken[name] = f(name)[1]
    second = conflict_name(b"dir/report.final.pdf", "pc", WHEN, taken)
    assert second == b"dir/report.final (conflict from pc " + STAMP + b" 2).pdf"
    taken[second] = f(second)[1]
    assert conflict_name(b"dir/report.final.pdf", "pc", WHEN, taken) == (
        b"dir/report.final (conflict from pc " + STAMP + b" 3).pdf"
    )
    assert conflict_name("Ünï/żółć.txt".encode(), "läptop", WHEN, {}) == (
        "Ünï/żółć (conflict from läptop 2025-12-29 155056).txt".encode()
    )
    assert os.fsdecode(name)


def test_local_directory_versus_remote_file(utc: None) -> None:
    """The directory keeps the name and its content; the remote file moves aside."""
    local = flat(d(b"x"), f(b"x/inner", b"i"))
    remote = flat(f(b"x", b"remote file"))
    m = merge({}, local, remote, "pc", WHEN)
    copy = b"x (conflict from pc " + STAMP + b")"
    assert m.conflicts == [(b"x", copy)]
    assert m.merged == {
        b"x": d(b"x")[1],
        b"x/inner": f(b"x/inner", b"i")[1],
        copy: f(copy, b"remote file")[1],
    }


def test_file_where_a_directory_must_be(utc: None) -> None:
    """Remote replaced a directory by a file while this device added a file inside it:
    the added file keeps its place, so the directory is re-made and the remote file
    becomes the conflict copy."""
    base = flat(d(b"a"), f(b"a/old", b"o"))
    local = flat(d(b"a"), f(b"a/old", b"o"), f(b"a/new", b"n"))
    remote = flat(f(b"a", b"now a file"))
    m = merge(base, local, remote, "pc", WHEN)
    copy = b"a (conflict from pc " + STAMP + b")"
    assert m.conflicts == [(b"a", copy)]
    assert m.merged == {
        b"a": d(b"a")[1],
        b"a/new": f(b"a/new", b"n")[1],
        copy: f(copy, b"now a file")[1],
    }
