"""A folder's state as a flat map, path → entry, and back to trees.

Sync compares and merges per path; the repository stores trees. Paths are relative,
`/`-separated bytes; an entry's `name` is the last component. Directories are entries
too, so empty directories and directory modes sync.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry, TreeLoader, trail
from anysync.types import BlobId

Flat = dict[bytes, TreeEntry]


def parent_of(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


def load(repo: TreeLoader, tree_id: BlobId, cache: dict[BlobId, Flat] | None = None) -> Flat:
    """Every entry under a tree. Trees are decoded (names checked) before anything else
    happens, so a hostile tree is refused before a single local file is touched."""
    out: Flat = {}

    def walk(tid: BlobId, prefix: bytes) -> None:
        for e in repo.load_tree(tid):
            path = prefix + e.name
            out[path] = e
            if e.type is EntryType.DIR and e.subtree is not None:
                walk(e.subtree, path + b"/")

    if cache is not None and tree_id in cache:
        return dict(cache[tree_id])
    walk(tree_id, b"")
    if cache is not None:
        cache[tree_id] = dict(out)
    return out


def build(repo: Repository, flat: Flat) -> BlobId:
    """Save the trees of a flat map (deepest first); returns the root tree ID.

    Unchanged directories encode to the same bytes, so their blobs are never re-uploaded.
    """
    children: dict[bytes, list[bytes]] = defaultdict(list)
    for path in flat:
        children[parent_of(path)].append(path)
    subtree: dict[bytes, BlobId] = {}
    for d in sorted(
        {p for p, e in flat.items() if e.type is EntryType.DIR}, key=lambda p: -p.count(b"/")
    ):
        subtree[d] = _save_dir(repo, flat, children.get(d, []), subtree)
    return _save_dir(repo, flat, children.get(b"", []), subtree)


def _save_dir(
    repo: Repository, flat: Flat, paths: list[bytes], subtree: dict[bytes, BlobId]
) -> BlobId:
    entries = []
    for p in paths:
        e = flat[p]
        if e.type is EntryType.DIR:
            e = replace(e, subtree=subtree[p], mtime_ns=0)  # dir mtimes churn; not synced
        entries.append(e)
    return repo.save_tree(entries)


def same(a: TreeEntry | None, b: TreeEntry | None) -> bool:
    """Equal for sync purposes: type, content and permission bits (not mtimes)."""
    if a is None or b is None:
        return a is b
    if a.type is not b.type or (a.mode & 0o777) != (b.mode & 0o777):
        return False
    if a.type is EntryType.FILE:
        return a.chunks == b.chunks
    if a.type is EntryType.SYMLINK:
        return a.target == b.target
    return True


def lookup(repo: Repository, tree_id: BlobId, path: bytes) -> TreeEntry | None:
    """The entry at `path` under a tree, loading only the trees along the way."""
    parts = path.split(b"/")
    found = trail(repo, repo.load_tree(tree_id), parts)
    return found[-1] if len(found) == len(parts) else None
