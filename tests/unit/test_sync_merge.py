"""The three-way merge rules, without I/O."""

from __future__ import annotations

import os

from anysync.repo.tree import EntryType, TreeEntry
from anysync.sync.flat import Flat
from anysync.sync.merge import conflict_name, merge
from anysync.types import BlobId

NOW = 1_767_000_000.0


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


def test_concurrent_edits_keep_both() -> None:
    base = flat(f(b"doc.txt", b"1"))
    m = merge(base, flat(f(b"doc.txt", b"L")), flat(f(b"doc.txt", b"R")), "laptop", NOW)
    assert m.merged[b"doc.txt"].chunks[0].raw[:1] == b"R"
    [(path, copy)] = m.conflicts
    assert path == b"doc.txt"
    assert copy.startswith(b"doc (conflict from laptop ") and copy.endswith(b").txt")
    assert m.merged[copy].chunks[0].raw[:1] == b"L"


def test_modify_beats_delete_both_ways() -> None:
    base = flat(f(b"a", b"1"), f(b"b", b"1"))
    local = flat(f(b"a", b"2"))  # edited a, deleted b
    remote = flat(f(b"b", b"2"))  # deleted a, edited b
    m = merge(base, local, remote, "laptop", NOW)
    assert set(m.merged) == {b"a", b"b"} and m.conflicts == []


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


def test_conflict_names() -> None:
    taken: Flat = {}
    name = conflict_name(b"dir/report.final.pdf", "pc", NOW, taken)
    assert name.startswith(b"dir/report.final (conflict from pc ") and name.endswith(b").pdf")
    assert conflict_name(b".bashrc", "pc", NOW, taken).startswith(b".bashrc (conflict from pc ")
    assert conflict_name(b"Makefile", "pc", NOW, taken).endswith(b")")
    taken[name] = f(name)[1]
    assert conflict_name(b"dir/report.final.pdf", "pc", NOW, taken) != name
    assert os.fsdecode(name)
