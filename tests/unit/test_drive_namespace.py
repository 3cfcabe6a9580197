"""The drive's namespace (head trees + change rows), its overlay for the merge, and its
durable rows: pure logic over real SQLite, no FUSE."""

from __future__ import annotations

from pathlib import Path

import pytest

from anysync.client.drive.meta import Change, DriveMeta, Head, decode_entry, encode_entry
from anysync.client.drive.namespace import Listing, Namespace, NeedTree, overlay
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.types import BlobId


def bid(n: int) -> BlobId:
    return BlobId(bytes([n]) * 32)


def file(name: bytes, chunk: int) -> TreeEntry:
    return TreeEntry(name, EntryType.FILE, 0o644, 1, 5, chunks=(bid(chunk),), chunk_sizes=(5,))


def folder(name: bytes, subtree: int | None) -> TreeEntry:
    return TreeEntry(name, EntryType.DIR, 0o755, 0, subtree=bid(subtree) if subtree else None)


class Trees:
    """Trees by ID; `missing` ones raise NeedTree like a tree not fetched yet."""

    def __init__(self, trees: dict[int, list[TreeEntry]]) -> None:
        self.trees = {
            bid(k): Listing([e.name for e in v], {e.name: e for e in v}) for k, v in trees.items()
        }
        self.missing: set[BlobId] = set()

    def cached(self, tree_id: BlobId) -> Listing | None:
        return None if tree_id in self.missing else self.trees.get(tree_id)

    def flat(self, tree_id: BlobId, prefix: bytes = b"") -> dict[bytes, TreeEntry]:
        out = {}
        for e in self.trees[tree_id].entries.values():
            p = prefix + b"/" + e.name if prefix else e.name
            out[p] = e
            if e.subtree is not None:
                out |= self.flat(e.subtree, p)
        return out


# head: a.txt, docs/ (b.txt, deep/ (c.txt))
HEAD = {
    1: [file(b"a.txt", 10), folder(b"docs", 2)],
    2: [file(b"b.txt", 11), folder(b"deep", 3)],
    3: [file(b"c.txt", 12)],
}


def rows(put: dict[bytes, Change]) -> dict[bytes, Change]:
    return {p: Change(c.entry, c.dirty, i + 1) for i, (p, c) in enumerate(put.items())}


def test_rename_of_a_directory_moves_rows_and_needs_no_content() -> None:
    trees = Trees(HEAD)
    ns = Namespace(trees, bid(1), {})
    put, drop = ns.plan_put(b"docs/new.txt", file(b"new.txt", 20), dirty=7), []
    ns.apply(rows(put), drop)
    put, drop = ns.plan_rename(b"docs", b"papers")
    ns.apply(rows(put), drop)
    assert ns.entry(b"docs") is None and ns.entry(b"docs/b.txt") is None
    assert ns.entry(b"papers/deep/c.txt") == file(b"c.txt", 12)
    assert ns.changes[b"papers/new.txt"].dirty == 7  # the working copy follows
    listing = ns.listing(b"papers")
    assert listing is not None and listing.names == [b"b.txt", b"deep", b"new.txt"]
    root = ns.listing(b"")
    assert root is not None and root.names == [b"a.txt", b"papers"]
    local = overlay(
        trees.flat(bid(1)), ns.changes, trees.flat, {b"papers/new.txt": file(b"new.txt", 21)}
    )
    assert sorted(local) == [
        b"a.txt", b"papers", b"papers/b.txt", b"papers/deep", b"papers/deep/c.txt",
        b"papers/new.txt",
    ]  # fmt: skip
    assert local[b"papers/new.txt"].chunks == (bid(21),)  # the chunked working copy
    assert local[b"papers/deep/c.txt"].chunks == (bid(12),)  # online-only: same chunks


def test_remove_and_replace_a_directory_with_a_file() -> None:
    trees = Trees(HEAD)
    ns = Namespace(trees, bid(1), {})
    put, drop = ns.plan_remove(b"docs")
    ns.apply(rows(put), drop)
    assert ns.entry(b"docs/b.txt") is None
    ns.apply(rows(ns.plan_put(b"docs", file(b"docs", 30))), [])
    local = overlay(trees.flat(bid(1)), ns.changes, trees.flat, {})
    assert sorted(local) == [b"a.txt", b"docs"] and local[b"docs"].type is EntryType.FILE


def test_a_new_directory_lists_only_its_rows() -> None:
    ns = Namespace(Trees(HEAD), bid(1), {})
    ns.apply(rows(ns.plan_put(b"made", folder(b"made", None))), [])
    assert ns.listing(b"made") == Listing([], {})
    ns.apply(rows(ns.plan_put(b"made/x", file(b"x", 40))), [])
    listing = ns.listing(b"made")
    assert listing is not None and listing.names == [b"x"]
    assert ns.listing(b"a.txt") is None  # a file is not a directory


def test_a_tree_not_fetched_yet_is_asked_for() -> None:
    trees = Trees(HEAD)
    trees.missing.add(bid(3))
    ns = Namespace(trees, bid(1), {})
    assert ns.entry(b"docs/deep") is not None  # its parent's tree is enough
    with pytest.raises(NeedTree) as need:
        ns.entry(b"docs/deep/c.txt")
    assert need.value.tree_id == bid(3)


def test_rows_survive_a_restart_with_their_entries(tmp_path: Path) -> None:
    meta = DriveMeta(tmp_path / "meta.db")
    stored = meta.write(
        {b"made": Change(folder(b"made", None), None, 0), b"a.txt": Change(None, None, 0)}
    )
    meta.write({b"f": Change(file(b"f", 9), meta.next_dirty(), 0)})
    meta.committed(Head(bid(50), 3, bid(1)), [b"a.txt"], {b"made": (b"made2", stored[b"made"])})
    meta.set_pin(b"docs", True)
    meta.close()
    again = DriveMeta(tmp_path / "meta.db")
    assert again.head() == Head(bid(50), 3, bid(1))
    changes = again.changes()
    assert set(changes) == {b"made2", b"f"}
    assert changes[b"made2"].entry == folder(b"made", None)  # a new directory: no tree yet
    assert changes[b"f"].dirty == 1 and changes[b"f"].entry == file(b"f", 9)
    assert again.pins() == {b"docs"}
    assert (tmp_path / "meta.db").stat().st_mode & 0o777 == 0o600
    again.close()


def test_entry_codec_round_trip() -> None:
    for e in (file(b"x", 1), folder(b"d", None), folder(b"d", 4)):
        assert decode_entry(encode_entry(e)) == e
