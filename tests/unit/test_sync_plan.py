"""The sync planner: merged state, disk and records → actions. Pure: no server, no disk."""

from __future__ import annotations

from anysync.client.localfs import StatKey
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat
from anysync.client.sync.merge import conflict_name, is_conflict_name
from anysync.client.sync.plan import Action, Op, plan
from anysync.client.sync.state import Record
from anysync.types import BlobId


def f(path: bytes, content: bytes) -> TreeEntry:
    return TreeEntry(path.rpartition(b"/")[2], EntryType.FILE, 0o644, 1, len(content),
                     (BlobId(content.ljust(32, b"\0")),))  # fmt: skip


def d(path: bytes) -> TreeEntry:
    return TreeEntry(path.rpartition(b"/")[2], EntryType.DIR, 0o755, 0)


def link(path: bytes, target: bytes) -> TreeEntry:
    return TreeEntry(path.rpartition(b"/")[2], EntryType.SYMLINK, 0o777, 1, target=target)


def st(n: int) -> StatKey:
    return StatKey(n, 1, 1, 1)


def synced(disk: Flat) -> tuple[dict[bytes, StatKey], dict[bytes, Record]]:
    """Stats for a disk that is exactly what this device last agreed on."""
    stats = {p: st(i) for i, p in enumerate(sorted(disk), 1)}
    return stats, {p: Record(e, stats[p]) for p, e in disk.items()}


def everything(_p: bytes, _e: TreeEntry | None) -> bool:
    return True


def ops(actions: list[Action]) -> list[tuple[str, bytes]]:
    return [(a.op.value, a.path) for a in actions]


def test_a_chain_of_renames_moves_in_dependency_order() -> None:
    disk = {b"a": f(b"a", b"A"), b"b": f(b"b", b"B")}
    stats, records = synced(disk)
    merged = {b"b": f(b"b", b"A"), b"c": f(b"c", b"B")}  # b → c, then a → b
    p = plan(merged, disk, stats, records, everything)
    assert ops(p.actions) == [("move", b"c"), ("move", b"b")]
    assert p.actions[0].expect is None and p.actions[0].src == b"b"
    assert p.actions[1].expect is None  # b was moved away first: expected absent
    assert not p.stuck


def test_a_swap_is_downloaded_not_moved_in_a_cycle() -> None:
    disk = {b"a": f(b"a", b"A"), b"b": f(b"b", b"B")}
    stats, records = synced(disk)
    p = plan({b"a": f(b"a", b"B"), b"b": f(b"b", b"A")}, disk, stats, records, everything)
    assert sorted(ops(p.actions)) == [("download", b"a"), ("download", b"b")]


def test_the_loser_moves_to_its_copy_before_the_winner_is_written() -> None:
    disk = {b"r.txt": f(b"r.txt", b"mine")}
    stats = {b"r.txt": st(1)}
    records = {b"r.txt": Record(f(b"r.txt", b"base"), st(9))}  # edited here
    merged = {b"r.txt": f(b"r.txt", b"theirs"), b"r (c).txt": f(b"r (c).txt", b"mine")}
    p = plan(merged, disk, stats, records, everything)
    assert ops(p.actions) == [("move", b"r (c).txt"), ("download", b"r.txt")]
    assert p.actions[1].expect is None  # overwritten only if the loser is gone


def test_a_local_change_is_never_overwritten_without_its_copy() -> None:
    disk = {b"r.txt": f(b"r.txt", b"mine")}
    records = {b"r.txt": Record(f(b"r.txt", b"base"), st(9))}
    p = plan({b"r.txt": f(b"r.txt", b"theirs")}, disk, {b"r.txt": st(1)}, records, everything)
    assert p.actions == [] and b"r.txt" in p.stuck


def test_type_changes_remove_the_old_entry_first() -> None:
    for old, new in [
        (d(b"p"), f(b"p", b"F")),
        (f(b"p", b"F"), d(b"p")),
        (d(b"p"), link(b"p", b"t")),
        (link(b"p", b"t"), d(b"p")),
    ]:
        disk = {b"p": old}
        stats, records = synced(disk)
        p = plan({b"p": new}, disk, stats, records, everything)
        assert [a.op for a in p.actions] == [Op.REMOVE, _create(new)], (old, new)
        assert p.actions[1].needs == b"p" and p.actions[1].expect is None


def _create(e: TreeEntry) -> Op:
    return {EntryType.DIR: Op.MKDIR, EntryType.FILE: Op.DOWNLOAD}.get(e.type, Op.SYMLINK)


def test_a_dir_becoming_a_file_removes_its_children_deepest_first() -> None:
    disk = {b"p": d(b"p"), b"p/q": d(b"p/q"), b"p/q/x": f(b"p/q/x", b"X")}
    stats, records = synced(disk)
    p = plan({b"p": f(b"p", b"F")}, disk, stats, records, everything)
    assert ops(p.actions) == [
        ("remove", b"p/q/x"), ("remove", b"p/q"), ("remove", b"p"), ("download", b"p"),
    ]  # fmt: skip


def test_an_unrecorded_local_entry_is_not_removed_for_a_type_change() -> None:
    disk = {b"p": f(b"p", b"new here")}
    p = plan({b"p": d(b"p")}, disk, {b"p": st(1)}, {}, everything)
    assert ops(p.actions) == [("mkdir", b"p")]  # fails on disk: the file is kept
    assert p.actions[0].needs is None


def test_a_symlink_replacing_an_edited_file_keeps_the_edit_first() -> None:
    disk = {b"f": f(b"f", b"edited")}
    records = {b"f": Record(f(b"f", b"v1"), st(9))}
    merged = {b"f": link(b"f", b"elsewhere"), b"f (c)": f(b"f (c)", b"edited")}
    p = plan(merged, disk, {b"f": st(1)}, records, everything)
    assert ops(p.actions) == [("move", b"f (c)"), ("symlink", b"f")]
    assert p.actions[1].expect is None


def test_a_name_too_long_is_stuck_not_attempted() -> None:
    long = b"n" * 300
    p = plan({long: f(long, b"L")}, {}, {}, {}, everything, name_max=255)
    assert p.actions == [] and long in p.stuck


def test_a_case_only_rename_is_one_move() -> None:
    disk = {b"Readme.TXT": f(b"Readme.TXT", b"R")}
    stats, records = synced(disk)
    p = plan({b"readme.txt": f(b"readme.txt", b"R")}, disk, stats, records, everything)
    assert ops(p.actions) == [("move", b"readme.txt")]
    assert p.intents() == {b"Readme.TXT": None, b"readme.txt": p.actions[0].entry}


def test_unchanged_paths_need_no_action_and_only_changed_rows_are_kept() -> None:
    disk = {b"a": f(b"a", b"A")}
    stats, records = synced(disk)
    p = plan(dict(disk), disk, stats, records, everything)
    assert p.actions == [] and p.keep == {} and p.drop == set()
    p = plan(dict(disk), disk, {b"a": st(5)}, records, everything)
    assert p.keep == {b"a": Record(disk[b"a"], st(5))}


def test_conflict_names_fit_keep_the_archive_extension_and_do_not_nest() -> None:
    name = b"n" * 236 + b".txt"
    copy = conflict_name(name, "pc", 0, {})
    assert len(copy) <= 255 and copy.endswith(b").txt") and is_conflict_name(copy)
    assert b" (conflict from pc " in conflict_name(b"a.tar.gz", "pc", 0, {})
    assert conflict_name(b"a.tar.gz", "pc", 0, {}).endswith(b").tar.gz")
    again = conflict_name(copy, "pc", 0, {copy: f(copy, b"x")})
    assert again.count(b"(conflict from") == 1 and len(again) <= 255
    multibyte = "é".encode() * 120 + b".txt"  # 244 bytes
    assert conflict_name(multibyte, "pc", 0, {}).decode("utf-8")
    assert not is_conflict_name(b"report.txt")
