"""tree.trail: the one path lookup in a snapshot's trees (restore, ls, sync versions),
on trees held in a dict: which entries it returns, and which trees it loads."""

from __future__ import annotations

from anysync.client.repo.tree import EntryType, TreeEntry, trail
from anysync.types import BlobId

SUB = BlobId(b"\x01" * 32)
DEEP = BlobId(b"\x02" * 32)
FILE = TreeEntry(b"f", EntryType.FILE, 0o644, 0, 1, (BlobId(b"\x03" * 32),))
LINK = TreeEntry(b"l", EntryType.SYMLINK, 0o777, 0, target=b"d")
DIR_D = TreeEntry(b"d", EntryType.DIR, 0o755, 0, subtree=SUB)
DIR_E = TreeEntry(b"e", EntryType.DIR, 0o755, 0, subtree=DEEP)
ROOT = [DIR_D, FILE, LINK]


class Trees:
    def __init__(self) -> None:
        self.trees = {SUB: [DIR_E, FILE], DEEP: [FILE]}
        self.loaded: list[BlobId] = []

    def load_tree(self, bid: BlobId) -> list[TreeEntry]:
        self.loaded.append(bid)
        return self.trees[bid]


def test_a_path_in_the_tree_gives_every_entry_on_the_way_loading_only_those_trees() -> None:
    trees = Trees()
    assert trail(trees, ROOT, [b"d", b"e", b"f"]) == [DIR_D, DIR_E, FILE]
    assert trees.loaded == [SUB, DEEP]
    trees.loaded.clear()
    assert trail(trees, ROOT, [b"d"]) == [DIR_D]
    assert trees.loaded == []  # the last entry's own tree is the caller's to load
    assert trail(trees, ROOT, []) == []


def test_a_missing_part_ends_the_trail_before_it() -> None:
    assert trail(Trees(), ROOT, [b"d", b"nope", b"f"]) == [DIR_D]
    assert trail(Trees(), ROOT, [b"nope"]) == []


def test_a_file_or_symlink_with_parts_below_it_ends_the_trail_at_itself() -> None:
    trees = Trees()
    assert trail(trees, ROOT, [b"f", b"x"]) == [FILE]
    assert trail(trees, ROOT, [b"l", b"f"]) == [LINK]  # never followed into its target
    assert trees.loaded == []
