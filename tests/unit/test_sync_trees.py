"""The head trees a sync folder keeps between passes (flat.Trees, #15): a later head is
loaded by fetching only the trees that changed, and a merge that changed one file
encodes and saves only the directories on that file's path, with the same root ID as a
full build."""

from __future__ import annotations

from dataclasses import replace

import pytest

from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync import flat
from anysync.types import BlobId


def folder(files_per_dir: int = 5) -> flat.Flat:
    """a/{0..4}/f*.txt and top-level files: 1 + 1 + 5 directories' trees."""
    out: flat.Flat = {b"a": TreeEntry(b"a", EntryType.DIR, 0o755, 0)}
    for d in range(5):
        path = b"a/%d" % d
        out[path] = TreeEntry(str(d).encode(), EntryType.DIR, 0o755, 0)
        for f in range(files_per_dir):
            name = b"f%d.txt" % f
            out[path + b"/" + name] = file_entry(name, d * 100 + f)
    out[b"top.txt"] = file_entry(b"top.txt", 999)
    return out


def file_entry(name: bytes, n: int) -> TreeEntry:
    chunk = BlobId(n.to_bytes(32, "big"))
    return TreeEntry(name, EntryType.FILE, 0o644, 1_000 + n, 10, (chunk,), chunk_sizes=(10,))


def saves(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the trees `repo` encodes and saves from now on."""
    count = [0]
    real = repo.save_tree

    def counting(entries: list[TreeEntry]) -> BlobId:
        count[0] += 1
        return real(entries)

    monkeypatch.setattr(repo, "save_tree", counting)
    return count


def test_a_loaded_head_is_the_flat_map_of_its_trees(repo: Repository) -> None:
    state = folder()
    root = flat.build(repo, state)
    repo.finish()
    trees = flat.Trees()
    loaded = trees.load(repo, root)
    assert loaded == flat.load(repo, root)
    assert trees.loaded == 7  # root, a, a/0..a/4


def test_the_next_head_fetches_only_the_trees_that_changed(repo: Repository) -> None:
    state = folder()
    trees = flat.Trees()
    first = flat.build(repo, state)
    repo.finish()
    trees.load(repo, first)
    changed = dict(state)
    changed[b"a/3/f1.txt"] = file_entry(b"f1.txt", 12345)
    root = flat.build(repo, changed)
    repo.finish()
    assert trees.load(repo, root) == flat.load(repo, root)
    assert trees.loaded == 3  # root, a, a/3: the other four directories are reused


def test_a_one_file_change_saves_only_the_directories_on_its_path(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = folder()
    trees = flat.Trees()
    first = flat.build(repo, state)
    repo.finish()
    head = trees.load(repo, first)
    changed = dict(head)
    changed[b"a/3/f1.txt"] = file_entry(b"f1.txt", 12345)
    expected = flat.build(repo, changed)  # without the known head: every directory
    count = saves(repo, monkeypatch)
    assert flat.build(repo, changed, trees) == expected
    assert count[0] == 3  # a/3, a and the root


def test_unchanged_state_reuses_the_root_and_a_mode_change_does_not(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = flat.Trees()
    root = flat.build(repo, folder())
    repo.finish()
    head = trees.load(repo, root)
    count = saves(repo, monkeypatch)
    assert flat.build(repo, head, trees) == root
    assert count[0] == 0
    chmod = dict(head)
    chmod[b"a/1/f2.txt"] = replace(head[b"a/1/f2.txt"], mode=0o600)
    removed = {p: e for p, e in head.items() if p != b"a/4/f0.txt"}
    for other in (chmod, removed):
        assert flat.build(repo, other, trees) == flat.build(repo, other) != root
