"""Tree decoding of hostile input: every length field is checked against the entry it
belongs to, and each refusal says what was wrong. Trees are built by hand here, byte by
byte as the format in repo/tree.py documents, to get past the encoder's own checks.
Version 1 trees (no chunk sizes) still decode; version 2 is what is written."""

from __future__ import annotations

import struct

import pytest

from anysync.client.repo import tree
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import HostilePath, IntegrityError
from anysync.types import BlobId

ID = b"\x11" * 32
ID2 = b"\x22" * 32
V1 = b"ASTR\x01"


def raw_tree(*entries: bytes, count: int | None = None, head: bytes = b"ASTR\x02") -> bytes:
    n = len(entries) if count is None else count
    return head + struct.pack("<I", n) + b"".join(entries)


def raw_entry(
    kind: int, name: bytes, tail: bytes, length: int | None = None, size: int = 0
) -> bytes:
    body = struct.pack("<BIqQH", kind, 0o644, 5, size, len(name)) + name + tail
    return struct.pack("<I", len(body) if length is None else length) + body


def u32s(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def malformed(data: bytes, reason: str) -> None:
    with pytest.raises(IntegrityError, match=f"^tree is malformed: {reason}$"):
        tree.decode(data)


def test_a_hand_built_tree_decodes() -> None:
    data = raw_tree(
        raw_entry(2, b"d", ID),
        raw_entry(1, b"f", u32s(2) + ID + ID2 + u32s(2, 300, 700), size=1000),
        raw_entry(1, b"g", u32s(1) + ID + u32s(0), size=9),  # sizes not known
        raw_entry(3, b"l", struct.pack("<H", 3) + b"abc"),
    )
    d, f, g, lnk = tree.decode(data)
    assert d == TreeEntry(b"d", EntryType.DIR, 0o644, 5, 0, subtree=BlobId(ID))
    assert f.chunks == (BlobId(ID), BlobId(ID2))
    assert (f.size, f.chunk_sizes) == (1000, (300, 700))
    assert (g.size, g.chunks, g.chunk_sizes) == (9, (BlobId(ID),), ())
    assert (lnk.type, lnk.target, lnk.size) == (EntryType.SYMLINK, b"abc", 0)
    assert tree.encode([d, f, g, lnk]) == data


def test_a_version_1_tree_still_decodes_without_sizes() -> None:
    """Byte for byte as version 1 wrote it: a file entry ends after its chunk IDs."""
    data = raw_tree(
        raw_entry(2, b"d", ID),
        raw_entry(1, b"f", u32s(2) + ID + ID2, size=1000),
        raw_entry(3, b"l", struct.pack("<H", 3) + b"abc"),
        head=V1,
    )
    d, f, lnk = tree.decode(data)
    assert d.subtree == BlobId(ID) and lnk.target == b"abc"
    assert (f.size, f.chunks, f.chunk_sizes) == (1000, (BlobId(ID), BlobId(ID2)), ())
    # Written again it is version 2, the file saying its sizes are not known.
    again = tree.encode([d, f, lnk])
    assert again[:5] == b"ASTR\x02" and tree.decode(again) == [d, f, lnk]


def test_version_1_bytes_are_never_read_as_sizes() -> None:
    """Version 1 left room after the chunk IDs (entry_length): whatever a version 1
    entry holds there is skipped, as a version 1 reader skipped it."""
    data = raw_tree(raw_entry(1, b"f", u32s(1) + ID + u32s(1, 5), size=9), head=V1)
    (f,) = tree.decode(data)
    assert (f.size, f.chunk_sizes) == (9, ())


def test_header_errors() -> None:
    malformed(raw_tree(head=b"ASTX\x02"), "bad magic")
    malformed(raw_tree(head=b"ASTR\x03"), "unsupported tree version 3")
    malformed(raw_tree(head=b"ASTR\x00"), "unsupported tree version 0")


@pytest.mark.parametrize(
    ("sizes", "size", "reason"),
    [
        (u32s(1, 9), 9, "'f': 1 chunk sizes for 2 chunks"),
        (u32s(3, 4, 2, 3), 9, "'f': 3 chunk sizes for 2 chunks"),
        (u32s(2, 9, 0), 9, "'f': a chunk size of 0"),
        (u32s(2, 4, 4), 9, "'f': chunk sizes add up to 8, not the file size 9"),
        (u32s(2, 2**32 - 1, 10), 9, "'f': chunk sizes add up to 4294967305, not the file size 9"),
    ],
)
def test_hostile_chunk_sizes_are_refused(sizes: bytes, size: int, reason: str) -> None:
    malformed(raw_tree(raw_entry(1, b"f", u32s(2) + ID + ID2 + sizes, size=size)), reason)


def test_chunk_sizes_past_their_entry() -> None:
    nxt = raw_entry(2, b"g", ID)
    missing = raw_entry(1, b"f", u32s(1) + ID)  # no sizes_count at all
    malformed(raw_tree(missing, nxt), "chunk sizes run past the entry")
    cut = raw_entry(1, b"f", u32s(1) + ID + u32s(1) + b"\x09\0", size=9)
    malformed(raw_tree(cut, nxt), "chunk sizes run past the entry")
    huge = raw_entry(1, b"f", u32s(1) + ID + u32s(2**32 - 1), size=9)
    malformed(raw_tree(huge, nxt), "chunk sizes run past the entry")


@pytest.mark.parametrize(
    ("sizes", "size", "problem"),
    [
        ((4,), 8, "1 chunk sizes for 2 chunks"),
        ((8, 0), 8, "a chunk size of 0"),
        ((4, 5), 8, "chunk sizes add up to 9, not the file size 8"),
    ],
)
def test_encode_refuses_sizes_it_could_not_read_back(
    sizes: tuple[int, ...], size: int, problem: str
) -> None:
    bad = TreeEntry(
        b"f", EntryType.FILE, 0o644, 0, size, (BlobId(ID), BlobId(ID2)), chunk_sizes=sizes
    )
    with pytest.raises(ValueError, match=rf"^b'f': {problem}$"):
        tree.encode([bad])


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
