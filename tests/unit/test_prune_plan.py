"""Prune's mark and plan rules (client/prune_plan.py), on commits, trees and packs in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from anysync.client.prune_plan import (
    Inventory,
    Marker,
    MaxUnused,
    Unreadable,
    newest_heads,
    parse_max_unused,
    plan,
)
from anysync.client.repo.commit import Commit, Edit
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import AnySyncError, IntegrityError, NotFound, UsageError
from anysync.types import PACK_ID_SIZE, BlobId, BlobKind, BlobLocation, PackId


def bid(name: str) -> BlobId:
    return BlobId(name.encode().ljust(32, b"."))


def pid(n: int) -> PackId:
    return PackId(bytes([n]) * PACK_ID_SIZE)


@dataclass(frozen=True)
class Row:
    name: str
    version: int
    commit_id: BlobId
    device_id: int = 1
    by_manage: bool = False


@dataclass
class World:
    """Commits and trees by ID; trees are one file each, named after their chunk."""

    commits: dict[BlobId, Commit] = field(default_factory=dict)
    trees: dict[BlobId, list[TreeEntry]] = field(default_factory=dict)
    broken: set[BlobId] = field(default_factory=set)

    def tree(self, name: str, *chunks: str, sub: BlobId | None = None) -> BlobId:
        entries = [
            TreeEntry(b"f", EntryType.FILE, 0o644, 0, 1, chunks=tuple(bid(c) for c in chunks))
        ]
        if sub is not None:
            entries.append(TreeEntry(b"d", EntryType.DIR, 0o755, 0, subtree=sub))
        self.trees[bid(name)] = entries
        return bid(name)

    def commit(
        self,
        name: str,
        tree: BlobId,
        *parents: str,
        kind: str = "backup",
        edit: Edit | None = None,
    ) -> BlobId:
        self.commits[bid(name)] = Commit(
            kind, tree, tuple(bid(p) for p in parents), "ref", 1, 0, 1, "d", "h", edit=edit
        )
        return bid(name)

    def load_commit(self, c: BlobId) -> Commit:
        if c in self.broken or c not in self.commits:
            raise NotFound(f"commit {c.short()} is missing")
        return self.commits[c]

    def load_trees(self, ids: Sequence[BlobId]) -> Mapping[BlobId, list[TreeEntry] | AnySyncError]:
        return {t: IntegrityError("tampered") if t in self.broken else self.trees[t] for t in ids}

    def marker(self) -> Marker:
        return Marker(self.load_commit, self.load_trees)


def backups(w: World) -> None:
    """s1 → s2 → s3, each snapshot with its own tree and chunk, plus a shared chunk."""
    w.commit("s1", w.tree("t1", "c1", "shared"))
    w.commit("s2", w.tree("t2", "c2", "shared"), "s1")
    w.commit("s3", w.tree("t3", "c3", "shared"), "s2")


def test_every_commit_tree_and_chunk_of_a_chain_is_marked() -> None:
    w = World()
    sub = w.tree("sub", "deep")
    w.commit("s1", w.tree("t1", "c1", sub=sub))
    w.commit("s2", w.tree("t2", "c2"), "s1")
    m = w.marker()
    m.add({"ref": bid("s2")}, [])
    assert m.marked[bid("s1")] is BlobKind.COMMIT
    assert m.marked[bid("t1")] is BlobKind.TREE
    assert m.marked[bid("sub")] is BlobKind.TREE
    assert m.marked[bid("deep")] is BlobKind.DATA
    assert {bid("c1"), bid("c2"), bid("s2"), bid("t2")} <= m.marked.keys()
    assert not m.rewinds


def test_all_parents_of_a_merge_are_walked() -> None:
    w = World()
    w.commit("a", w.tree("ta", "ca"))
    w.commit("b", w.tree("tb", "cb"))
    w.commit("m", w.tree("tm", "cm"), "a", "b", kind="sync")
    m = w.marker()
    m.add({"ref": bid("m")}, [])
    assert {bid("a"), bid("b"), bid("ca"), bid("cb")} <= m.marked.keys()


def test_a_counting_edit_forgets_a_snapshots_tree_but_keeps_its_commit() -> None:
    w = World()
    backups(w)
    w.commit("e", bid("t3"), "s3", kind="edit", edit=Edit(forget=(bid("s1"),)))
    m = w.marker()
    m.add({"ref": bid("e")}, [Row("ref", 4, bid("e"), by_manage=True)])
    assert bid("s1") in m.marked  # the chain stays whole
    assert bid("t1") not in m.marked and bid("c1") not in m.marked
    assert bid("shared") in m.marked  # still named by a kept snapshot
    assert {bid("t2"), bid("c2"), bid("t3"), bid("c3")} <= m.marked.keys()


def test_an_edit_by_a_device_without_manage_forgets_nothing() -> None:
    w = World()
    backups(w)
    w.commit("e", bid("t3"), "s3", kind="edit", edit=Edit(forget=(bid("s1"),)))
    m = w.marker()
    m.add({"ref": bid("e")}, [Row("ref", 4, bid("e"), by_manage=False)])
    assert bid("c1") in m.marked


def test_an_edit_of_another_ref_or_absent_from_history_does_not_count() -> None:
    w = World()
    backups(w)
    w.commit("e", bid("t3"), "s3", kind="edit", edit=Edit(forget=(bid("s1"),)))
    m = w.marker()
    m.add({"ref": bid("e"), "other": bid("s3")}, [Row("other", 1, bid("e"), by_manage=True)])
    assert bid("c1") in m.marked


def test_a_replacement_keeps_its_tree_even_when_the_original_is_forgotten() -> None:
    w = World()
    backups(w)
    w.commit("r1", w.tree("tr", "cr"))  # the repaired s1: parentless
    w.commit(
        "e",
        bid("t3"),
        "s3",
        kind="edit",
        edit=Edit(forget=(bid("s1"),), replace=((bid("s1"), bid("r1")),)),
    )
    m = w.marker()
    m.add({"ref": bid("e")}, [Row("ref", 4, bid("e"), by_manage=True)])
    assert {bid("r1"), bid("tr"), bid("cr")} <= m.marked.keys()
    assert bid("c1") not in m.marked


def test_a_rewound_version_is_reported_and_kept_whole() -> None:
    w = World()
    backups(w)
    w.commit("x", w.tree("tx", "cx"), "s2")  # version 3 made by another device, then rewound
    w.commit("e", bid("t2"), "s2", kind="edit", edit=Edit(forget=(bid("s1"),)))
    m = w.marker()
    rows = [
        Row("ref", 1, bid("s1")),
        Row("ref", 2, bid("s2")),
        Row("ref", 3, bid("x"), device_id=7),
        Row("ref", 4, bid("e"), by_manage=True),
    ]
    m.add({"ref": bid("e")}, rows)
    assert list(m.rewinds.values()) == [
        "ref ref: version 3 by device 7 is not in the current history; kept"
    ]
    assert {bid("x"), bid("tx"), bid("cx")} <= m.marked.keys()
    # Seen from the rewound head, s1 was never forgotten: its tree stays too.
    assert bid("c1") in m.marked


def test_versions_on_the_current_chain_add_nothing() -> None:
    w = World()
    backups(w)
    m = w.marker()
    m.add({"ref": bid("s3")}, [Row("ref", v, bid(f"s{v}")) for v in (1, 2, 3)])
    assert not m.rewinds


@pytest.mark.parametrize("what", ["s1", "t2", "sub"])
def test_an_unreadable_commit_or_tree_aborts_the_mark(what: str) -> None:
    w = World()
    sub = w.tree("sub", "deep")
    w.commit("s1", w.tree("t1", "c1"))
    w.commit("s2", w.tree("t2", "c2", sub=sub), "s1")
    w.broken.add(bid(what))
    with pytest.raises(Unreadable, match="run `anysync check`"):
        w.marker().add({"ref": bid("s2")}, [])


def test_new_versions_are_marked_incrementally() -> None:
    w = World()
    backups(w)
    m = w.marker()
    m.add({"ref": bid("s2")}, [])
    assert bid("c3") not in m.marked
    rows = [Row("ref", 3, bid("s3")), Row("new", 1, bid("s1"))]
    assert newest_heads(rows) == {"ref": bid("s3"), "new": bid("s1")}
    m.add(newest_heads(rows), rows)
    assert {bid("s3"), bid("t3"), bid("c3")} <= m.marked.keys()


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Pack:
    pack_id: PackId
    size: int
    created_at: int
    entries: tuple[BlobLocation, ...]


def pack(n: int, blobs: dict[str, int], age: int = 10_000, overhead: int = 100) -> Pack:
    entries = []
    offset = 0
    for name, length in blobs.items():
        entries.append(BlobLocation(bid(name), pid(n), offset, length))
        offset += length
    return Pack(pid(n), offset + overhead, NOW - age, tuple(entries))


NOW = 1_800_000_000


def marks(*names: str) -> dict[BlobId, BlobKind]:
    return {bid(n): BlobKind.DATA for n in names}


def test_a_pack_with_nothing_marked_is_dead() -> None:
    inv = Inventory.of([pack(1, {"a": 1000}), pack(2, {"x": 1000})])
    p = plan(inv, marks("a"), MaxUnused(), now=NOW, min_pack_age=0)
    assert p.dead == [pid(2)] and p.dead_bytes == 1100
    assert p.repack == [] and p.live_bytes == 1000 and p.unused_bytes == 0


def test_the_fullest_pack_keeps_a_blob_and_the_other_copy_goes() -> None:
    # b is in both; pack 2 holds more marked bytes, so b is kept there and pack 1 is dead.
    inv = Inventory.of([pack(1, {"b": 500}), pack(2, {"b": 500, "c": 900})])
    p = plan(inv, marks("b", "c"), MaxUnused(), now=NOW, min_pack_age=0)
    assert p.chosen[bid("b")].pack_id == pid(2)
    assert p.dead == [pid(1)]


def test_equal_packs_are_decided_by_pack_id() -> None:
    inv = Inventory.of([pack(9, {"b": 500}), pack(3, {"b": 500})])
    p = plan(inv, marks("b"), MaxUnused(), now=NOW, min_pack_age=0)
    assert p.chosen[bid("b")].pack_id == pid(3)
    assert p.dead == [pid(9)]


def test_young_packs_are_left_alone() -> None:
    inv = Inventory.of([pack(1, {"x": 1000}, age=5), pack(2, {"y": 1000, "z": 9000}, age=5)])
    p = plan(inv, marks("y"), MaxUnused(fraction=0.0), now=NOW, min_pack_age=60)
    assert p.dead == [] and p.repack == [] and p.young == 2


def test_the_emptiest_packs_are_repacked_until_little_is_unused() -> None:
    inv = Inventory.of(
        [
            pack(1, {"a1": 900, "u1": 100}),  # 10 % unused
            pack(2, {"a2": 200, "u2": 800}),  # 80 % unused
            pack(3, {"a3": 500, "u3": 500}),  # 50 % unused
            pack(4, {"a4": 1000}),
        ]
    )
    live = marks("a1", "a2", "a3", "a4")
    p = plan(inv, live, MaxUnused(), now=NOW, min_pack_age=0)
    # 1400 unused next to 2600 live; 5 % of the total allows 136: packs 2 and 3 go,
    # which leaves pack 1's 100 bytes.
    assert p.repack == [pid(2), pid(3)] and p.unused_bytes == 100
    assert p.dead == []
    assert plan(inv, live, parse_max_unused("unlimited"), now=NOW, min_pack_age=0).repack == []
    assert plan(inv, live, parse_max_unused("1000"), now=NOW, min_pack_age=0).repack == [pid(2)]
    every = plan(inv, live, parse_max_unused("0%"), now=NOW, min_pack_age=0)
    assert every.repack == [pid(2), pid(3), pid(1)] and every.unused_bytes == 0


def test_marked_blobs_in_no_pack_are_reported() -> None:
    p = plan(
        Inventory.of([pack(1, {"a": 10})]), marks("a", "gone"), MaxUnused(), now=NOW, min_pack_age=0
    )
    assert p.missing == [bid("gone")]


def test_a_pack_goes_only_if_its_marked_blobs_have_a_copy_outside() -> None:
    inv = Inventory.of([pack(1, {"a": 10, "x": 10}), pack(2, {"a": 10}), pack(3, {"b": 10})])
    live = marks("a", "b")
    assert inv.condemnable([pid(1)], live) == [pid(1)]  # a is also in pack 2
    assert inv.condemnable([pid(1), pid(2)], live) == []  # a would be gone with both
    assert inv.condemnable([pid(3)], live) == []  # b's only copy
    inv.add(pack(4, {"b": 10}))  # a repacked copy
    assert inv.condemnable([pid(3)], live) == [pid(3)]
    inv.remove([pid(2)])
    assert inv.condemnable([pid(1)], live) == []  # a's other copy is gone now


def test_parse_max_unused() -> None:
    assert parse_max_unused("5%") == MaxUnused(fraction=0.05)
    assert parse_max_unused("2G") == MaxUnused(fraction=None, limit=2 * 1024**3)
    assert parse_max_unused("500MiB") == MaxUnused(fraction=None, limit=500 * 1024**2)
    assert MaxUnused(fraction=0.5).allowed(1000) == 1000
    for bad in ("five", "120%", "-1%"):
        with pytest.raises(UsageError):
            parse_max_unused(bad)
