"""Merge rules not covered by test_sync_merge.py: directory-versus-directory and
directory-versus-file in both directions, parents made for every entry (and a file
where a directory must be kept as a conflict copy, never dropped), and the limits of
conflict names."""

from __future__ import annotations

import time

import pytest

from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat
from anysync.client.sync.merge import conflict_name, merge
from anysync.types import BlobId
from tests.unit.fakes import TAG, WHEN

pytestmark = pytest.mark.usefixtures("utc")  # conftest: conflict stamps in UTC


def f(path: bytes, content: bytes = b"x") -> tuple[bytes, TreeEntry]:
    cid = BlobId(content.ljust(32, b"\0")[:32])
    name = path.rpartition(b"/")[2]
    return path, TreeEntry(name, EntryType.FILE, 0o644, 9, len(content), (cid,))


def d(path: bytes, mode: int = 0o700) -> tuple[bytes, TreeEntry]:
    return path, TreeEntry(path.rpartition(b"/")[2], EntryType.DIR, mode, 9)


def flat(*items: tuple[bytes, TreeEntry]) -> Flat:
    return dict(items)


def made_dir(name: bytes) -> TreeEntry:
    """What merge makes for a missing parent."""
    return TreeEntry(name, EntryType.DIR, 0o755, 0)


def test_missing_parents_are_made_at_every_level() -> None:
    m = merge({}, flat(f(b"x/y/z/file")), {}, "pc", WHEN)
    assert m.merged == {
        b"x": made_dir(b"x"),
        b"x/y": made_dir(b"y"),
        b"x/y/z": made_dir(b"z"),
        b"x/y/z/file": f(b"x/y/z/file")[1],
    }
    assert m.conflicts == []


def test_existing_parents_are_kept_as_they_are() -> None:
    local = flat(d(b"x", 0o711), d(b"x/y", 0o750), f(b"x/y/file"))
    m = merge({}, local, {}, "pc", WHEN)
    assert m.merged == local


def test_a_file_where_a_directory_must_be_becomes_a_conflict_copy() -> None:
    base: Flat = flat(d(b"x"))
    local = flat(d(b"x"), f(b"x/y", b"local file"))  # added here
    remote = flat(d(b"x"), f(b"x/y/z/inner", b"i"))  # added there, without its parents
    m = merge(base, local, remote, "pc", WHEN)
    copy = b"x/y" + TAG
    assert m.conflicts == [(b"x/y", copy)]
    assert m.merged[copy] == TreeEntry(
        b"y" + TAG, EntryType.FILE, 0o644, 9, 10, (BlobId(b"local file".ljust(32, b"\0")),)
    )
    assert m.merged[b"x/y"] == made_dir(b"y")
    assert m.merged[b"x/y/z"] == made_dir(b"z")
    assert m.merged[b"x"] == d(b"x")[1]
    assert set(m.merged) == {b"x", b"x/y", b"x/y/z", b"x/y/z/inner", copy}


def test_directories_changed_on_both_sides_take_the_remote_mode() -> None:
    base, local, remote = flat(d(b"x", 0o755)), flat(d(b"x", 0o700)), flat(d(b"x", 0o750))
    m = merge(base, local, remote, "pc", WHEN)
    assert m.merged == remote and m.conflicts == []


def test_a_local_directory_keeps_the_name_against_a_remote_file() -> None:
    local = flat(d(b"x"), f(b"x/in"))
    remote = flat(f(b"x", b"remote file"))
    m = merge({}, local, remote, "pc", WHEN)
    assert m.merged[b"x"] == d(b"x")[1]
    assert m.merged[b"x/in"] == f(b"x/in")[1]
    assert m.conflicts == [(b"x", b"x" + TAG)]
    assert m.merged[b"x" + TAG].chunks == f(b"x", b"remote file")[1].chunks


def test_a_remote_directory_keeps_the_name_against_a_local_file() -> None:
    local = flat(d(b"a"), f(b"a/x.txt", b"local file"))
    remote = flat(d(b"a"), d(b"a/x.txt"), f(b"a/x.txt/in"))
    m = merge(flat(d(b"a")), local, remote, "pc", WHEN)
    copy = b"a/x" + TAG + b".txt"
    assert m.conflicts == [(b"a/x.txt", copy)]
    assert m.merged[copy].name == b"x" + TAG + b".txt"
    assert m.merged[b"a/x.txt"] == d(b"a/x.txt")[1]


def test_the_conflict_stamp_is_the_given_time_not_the_clock() -> None:
    base, local, remote = flat(f(b"doc", b"1")), flat(f(b"doc", b"2")), flat(f(b"doc", b"3"))
    m = merge(base, local, remote, "pc", WHEN)
    assert m.conflicts == [(b"doc", b"doc" + TAG)]
    m = merge(base, local, remote, "pc")
    ((_, copy),) = m.conflicts
    today = time.strftime("%Y-%m-%d", time.localtime()).encode()
    assert copy.startswith(b"doc (conflict from pc " + today)


def test_an_extension_is_only_in_the_last_component() -> None:
    assert conflict_name(b"a.b/file", "pc", WHEN, {}) == b"a.b/file" + TAG
    assert conflict_name(b"a.b/f.x", "pc", WHEN, {}) == b"a.b/f" + TAG + b".x"


def test_at_most_999_conflict_copies() -> None:
    taken: Flat = {}
    for _ in range(999):
        name = conflict_name(b"f", "pc", WHEN, taken)
        taken[name] = f(name)[1]
    assert b"f" + TAG in taken
    assert b"f" + TAG[:-1] + b" 999)" in taken
    with pytest.raises(RuntimeError, match=r"^too many conflict copies$"):
        conflict_name(b"f", "pc", WHEN, taken)
