"""The shape of conflict-copy names (merge.py docstring, docs/design.md §8.3):
`stem (conflict from DEVICE YYYY-MM-DD HHMMSS[ N]).ext`, at most NAME_MAX bytes (a long
stem is shortened, never inside a UTF-8 character), a compressed archive's two suffixes
kept whole (`a.tar.gz`), and one tag only on a copy of a copy."""

from __future__ import annotations

import pytest

from anysync.client.sync.merge import NAME_MAX, conflict_name, is_conflict_name
from tests.unit.fakes import TAG, WHEN

pytestmark = pytest.mark.usefixtures("utc")  # conftest: conflict stamps in UTC


def name(path: bytes, device: str = "pc", name_max: int = NAME_MAX) -> bytes:
    return conflict_name(path, device, WHEN, {}, name_max)


# --- extensions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # the archive's two suffixes stay together, whatever comes before them
        (b"my.backup.tar.gz", b"my.backup" + TAG + b".tar.gz"),
        (b"main.c.gz", b"main" + TAG + b".c.gz"),  # a one-letter inner suffix
        (b"fix.patch.gz", b"fix" + TAG + b".patch.gz"),  # five letters: still a suffix
        # six letters or more, or not letters and digits: part of the name
        (b"report.backup.gz", b"report.backup" + TAG + b".gz"),
        (b"notes.v1-2.gz", b"notes.v1-2" + TAG + b".gz"),
        (b"dir/notes.v1-2.gz", b"dir/notes.v1-2" + TAG + b".gz"),
    ],
)
def test_compressed_suffixes(path: bytes, expected: bytes) -> None:
    assert name(path) == expected


# --- copies of copies --------------------------------------------------------------------


def test_a_copy_of_a_copy_gets_one_tag_only() -> None:
    older = b"dir/a (conflict from laptop 2024-01-02 030405).txt"
    assert name(older) == b"dir/a" + TAG + b".txt"
    numbered = b"a (conflict from laptop 2024-01-02 030405 7).tar.gz"
    assert name(numbered) == b"a" + TAG + b".tar.gz"
    assert is_conflict_name(name(older))


# --- the device --------------------------------------------------------------------------


def test_a_slash_or_nul_in_the_device_name_becomes_an_underscore() -> None:
    got = name(b"f.txt", device="a/b\x00c")
    assert got == b"f (conflict from a_b_c 2025-12-29 155056).txt"
    assert b"/" not in got and b"\x00" not in got


def test_the_device_name_is_cut_to_64_bytes() -> None:
    got = name(b"f", device="d" * 70)
    assert got == b"f (conflict from " + b"d" * 64 + b" 2025-12-29 155056)"


# --- length ------------------------------------------------------------------------------


def test_a_long_stem_is_cut_to_fit_name_max() -> None:
    got = name(b"s" * 300 + b".txt")
    assert got == b"s" * (NAME_MAX - len(TAG) - 4) + TAG + b".txt"
    assert len(got) == NAME_MAX


def test_a_stem_is_never_cut_inside_a_utf8_character() -> None:
    # 2-byte characters and an odd number of bytes left for the stem: the character that
    # would be split is left out whole.
    stem = "é".encode() * 200
    room = NAME_MAX - len(TAG) - len(b".md")
    assert room % 2 == 1
    got = name(stem + b".md")
    assert got == "é".encode() * (room // 2) + TAG + b".md"
    assert got.decode("utf-8")
    assert len(got) <= NAME_MAX


def test_no_room_for_the_stem_leaves_it_out_rather_than_overflow() -> None:
    name_max = len(TAG) + len(b".txt")
    got = name(b"report.txt", name_max=name_max)
    assert len(got) <= name_max
    assert got.endswith(TAG + b".txt")


def test_an_extension_of_half_the_limit_is_still_an_extension() -> None:
    ext = b"." + b"x" * (NAME_MAX // 2 - 1)  # NAME_MAX // 2 bytes with its dot
    assert name(b"a" + ext) == b"a" + TAG + ext


def test_a_longer_extension_is_treated_as_part_of_the_stem() -> None:
    full = b"a." + b"x" * (NAME_MAX // 2)  # the "extension" is more than half the limit
    assert name(full) == full + TAG
    huge = b"a." + b"x" * 300
    got = name(huge)
    assert got == huge[: NAME_MAX - len(TAG)] + TAG
    assert len(got) == NAME_MAX
