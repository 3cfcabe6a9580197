"""A folder's state as a flat map, path → entry, and back to trees.

Sync compares and merges per path; the repository stores trees. Paths are relative,
`/`-separated bytes; an entry's `name` is the last component. Directories are entries
too, so empty directories and directory modes sync.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from anysync.client.repo import tree as tree_codec
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry, TreeLoader, trail
from anysync.types import BlobId, BlobKind

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


class Trees:
    """The decoded trees of the head a sync folder last loaded, kept between passes.

    A tree's ID names its content, so a later head that shares a subtree needs neither
    its download nor its decode: loading a head costs the directories that changed, and
    `build` finds a directory whose entries are unchanged without encoding it again.
    Holds the trees of one head only (the last one loaded)."""

    def __init__(self) -> None:
        self._trees: dict[BlobId, list[TreeEntry]] = {}
        self._at: dict[bytes, BlobId] = {}  # directory path (b"": the root) → its tree
        self.loaded = 0  # trees downloaded and decoded by the last load (for tests)

    def load(self, repo: Repository, tree_id: BlobId) -> Flat:
        """Every entry under the tree, as `load` gives them; the trees missing here are
        fetched a level at a time (one batched read per level, not one per directory)
        and all decoded (names checked) before this returns."""
        out: Flat = {}
        trees: dict[BlobId, list[TreeEntry]] = {}
        at: dict[bytes, BlobId] = {}
        self.loaded = 0
        level = [(tree_id, b"")]
        while level:
            wanted = list(dict.fromkeys(t for t, _ in level if t not in self._trees))
            blobs = repo.load_many(BlobKind.TREE, wanted) if wanted else {}
            for tid in wanted:
                data = blobs[tid]
                if isinstance(data, Exception):
                    raise data
                trees[tid] = tree_codec.decode(data)
            self.loaded += len(wanted)
            below = []
            for tid, path in level:
                entries = trees[tid] if tid in trees else self._trees[tid]
                trees[tid] = entries
                at[path.rstrip(b"/")] = tid
                for e in entries:
                    out[path + e.name] = e
                    if e.type is EntryType.DIR and e.subtree is not None:
                        below.append((e.subtree, path + e.name + b"/"))
            level = below
        self._trees, self._at = trees, at
        return out

    def at(self, path: bytes) -> tuple[BlobId, list[TreeEntry]] | None:
        """The tree of the directory `path` in the last head loaded, with its entries."""
        tid = self._at.get(path)
        return None if tid is None else (tid, self._trees[tid])


def build(repo: Repository, flat: Flat, known: Trees | None = None) -> BlobId:
    """Save the trees of a flat map (deepest first); returns the root tree ID.

    Unchanged directories encode to the same bytes, so their blobs are never re-uploaded.
    With `known` (holding the head this state was merged with), a directory whose
    entries equal its tree's in that head takes that tree's ID without being encoded.
    """
    children: dict[bytes, list[bytes]] = defaultdict(list)
    for path in flat:
        children[parent_of(path)].append(path)
    subtree: dict[bytes, BlobId] = {}
    for d in sorted(
        {p for p, e in flat.items() if e.type is EntryType.DIR}, key=lambda p: -p.count(b"/")
    ):
        subtree[d] = _save_dir(repo, flat, d, children.get(d, []), subtree, known)
    return _save_dir(repo, flat, b"", children.get(b"", []), subtree, known)


def _save_dir(
    repo: Repository,
    flat: Flat,
    path: bytes,
    paths: list[bytes],
    subtree: dict[bytes, BlobId],
    known: Trees | None,
) -> BlobId:
    entries = []
    for p in paths:
        e = flat[p]
        if e.type is EntryType.DIR:
            e = replace(e, subtree=subtree[p], mtime_ns=0)  # dir mtimes churn; not synced
        entries.append(e)
    same_as = known.at(path) if known is not None else None
    if same_as is not None:
        # Equal entries encode to the same bytes, hence the same ID (trees are sorted).
        entries.sort(key=lambda e: e.name)
        if entries == same_as[1]:
            return same_as[0]
    return repo.save_tree(entries)


def same(a: TreeEntry | None, b: TreeEntry | None) -> bool:
    """Equal for sync purposes: type, content and permission bits (not mtimes)."""
    if a is b:
        return True
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
