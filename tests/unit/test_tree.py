"""Tree decoding of hostile input: every length field is checked against the entry it
belongs to, and each refusal says what was wrong. Trees are built by hand here, byte by
byte as the format in repo/tree.py documents, to get past the encoder's own checks."""

from __future__ import annotations

import struct

import pytest

from anysync.client.repo import tree
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import HostilePath, IntegrityError
from anysync.types import BlobId

ID = b"\x11" * 32


def raw_tree(*entries: bytes, count: int | None = None, head: bytes = b"ASTR\x01") -> bytes:
    n = len(entries) if count is None else count
    return head + struct.pack("<I", n) + b"".join(entries)


def raw_entry(kind: int, name: bytes, tail: bytes, length: int | None = None) -> bytes:
    body = struct.pack("<BIqQH", kind, 0o644, 5, 0, len(name)) + name + tail
    return struct.pack("<I", len(body) if length is None else length) + body


def malformed(data: bytes, reason: str) -> None:
    with pytest.raises(IntegrityError, match=f"^tree is malformed: {reason}$"):
        tree.decode(data)


def test_a_hand_built_tree_decodes() -> None:
    data = raw_tree(
        raw_entry(2, b"d", ID),
        raw_entry(1, b"f", struct.pack("<I", 2) + ID + b"\x22" * 32),
        raw_entry(3, b"l", struct.pack("<H", 3) + b"abc"),
    )
    d, f, lnk = tree.decode(data)
    assert d == TreeEntry(b"d", EntryType.DIR, 0o644, 5, 0, subtree=BlobId(ID))
    assert f.chunks == (BlobId(ID), BlobId(b"\x22" * 32))
    assert (lnk.type, lnk.target, lnk.size) == (EntryType.SYMLINK, b"abc", 0)
    assert tree.encode([d, f, lnk]) == data


def test_header_errors() -> None:
    malformed(raw_tree(head=b"ASTX\x01"), "bad magic")
    malformed(raw_tree(head=b"ASTR\x02"), "unsupported tree version 2")


def test_an_entry_longer_than_the_tree() -> None:
    entry = raw_entry(2, b"d", ID)
    malformed(raw_tree(entry[:-1]), "entry runs past the end")


def test_trailing_bytes() -> None:
    malformed(raw_tree(raw_entry(2, b"d", ID)) + b"\0", "trailing bytes after the last entry")


def test_unsorted_or_duplicate_names() -> None:
    a, b = raw_entry(2, b"a", ID), raw_entry(2, b"b", ID)
    malformed(raw_tree(b, a), "entries are not sorted and unique")
    malformed(raw_tree(a, a), "entries are not sorted and unique")


# Each variable-length part must end inside its own entry, even when the bytes after the
# entry (the next entry) would let it be read.
def test_a_chunk_list_past_its_entry() -> None:
    short = raw_entry(1, b"a", struct.pack("<I", 2) + ID, length=None)
    nxt = raw_entry(2, b"b", ID)
    malformed(raw_tree(short, nxt), "chunk list runs past the entry")


def test_a_subtree_id_past_its_entry() -> None:
    cut = raw_entry(2, b"a", ID[:16])
    nxt = raw_entry(2, b"b", ID)
    malformed(raw_tree(cut, nxt), "subtree ID runs past the entry")


def test_a_symlink_target_past_its_entry() -> None:
    cut = raw_entry(3, b"a", struct.pack("<H", 40) + b"abc")
    nxt = raw_entry(2, b"b", ID)
    malformed(raw_tree(cut, nxt), "symlink target runs past the entry")


def test_the_name_length_limit() -> None:
    tree.check_name(b"n" * 1024)
    long = b"n" * 1025
    with pytest.raises(
        HostilePath,
        match=r"^refusing hostile file name from the repository: b'n{80}'$",
    ):
        tree.check_name(long)


def test_encode_refuses_duplicates() -> None:
    a = TreeEntry(b"a", EntryType.SYMLINK, 0o777, 0, target=b"x")
    with pytest.raises(ValueError, match=r"^duplicate name in tree: b'a'$"):
        tree.encode([a, a])
