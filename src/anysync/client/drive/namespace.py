"""What the drive shows: the served head's trees, overlaid with this device's changes.

Pure over memory: trees come decoded from a TreeSource, which raises NeedTree when one
must be fetched first (the caller fetches it off the event loop and asks again), so a
listing never blocks on the network and never touches file content. Operations are
planned here as change rows (put, drop), written durably by the caller, then applied.

A path resolves top-down: a change row for the path wins; otherwise the entry comes
from its parent directory's tree. A renamed directory is one row holding the old
subtree ID (nothing is downloaded or listed), plus the rows below it, re-keyed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from anysync.client.drive.meta import Change
from anysync.client.repo import tree
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.types import BlobId

Flat = dict[bytes, TreeEntry]


class NeedTree(Exception):
    """A tree is not on this device yet: fetch it, then ask again."""

    def __init__(self, tree_id: BlobId) -> None:
        super().__init__(tree_id.hex())
        self.tree_id = tree_id


@dataclass(frozen=True)
class Listing:
    names: list[bytes]  # sorted: readdir offsets are indexes into it
    entries: dict[bytes, TreeEntry]


EMPTY = Listing([], {})


class TreeSource(Protocol):
    def cached(self, tree_id: BlobId) -> Listing | None: ...


def parent_of(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


def name_of(path: bytes) -> bytes:
    return path.rpartition(b"/")[2]


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def is_under(path: bytes, top: bytes) -> bool:
    return path.startswith(top + b"/") if top else path != b""


class Namespace:
    def __init__(
        self, trees: TreeSource, head_tree: BlobId | None, changes: dict[bytes, Change]
    ) -> None:
        self.trees = trees
        self.head_tree = head_tree
        self.changes: dict[bytes, Change] = {}
        self._below: dict[bytes, set[bytes]] = defaultdict(set)  # dir → changed child names
        self._merged: dict[bytes, Listing] = {}  # listings of directories with changes
        self.apply(changes, ())

    # ------------------------------------------------------------------ reading

    def root(self) -> TreeEntry:
        return TreeEntry(b"/", EntryType.DIR, 0o755, 0, subtree=self.head_tree)

    def entry(self, path: bytes) -> TreeEntry | None:
        if path == b"":
            return self.root()
        change = self.changes.get(path)
        if change is not None:
            return change.entry
        parent = self.entry(parent_of(path))
        if parent is None or parent.type is not EntryType.DIR or parent.subtree is None:
            return None
        return self._tree(parent.subtree).entries.get(name_of(path))

    def listing(self, path: bytes) -> Listing | None:
        """The directory's entries (None: not a directory)."""
        e = self.entry(path)
        if e is None or e.type is not EntryType.DIR:
            return None
        base = self._tree(e.subtree) if e.subtree is not None else EMPTY
        changed = self._below.get(path)
        if not changed:
            return base
        merged = self._merged.get(path)
        if merged is None:
            entries = dict(base.entries)
            for name in changed:
                c = self.changes[join(path, name)]
                if c.entry is None:
                    entries.pop(name, None)
                else:
                    entries[name] = c.entry
            merged = self._merged[path] = Listing(sorted(entries), entries)
        return merged

    def _tree(self, tree_id: BlobId) -> Listing:
        got = self.trees.cached(tree_id)
        if got is None:
            raise NeedTree(tree_id)
        return got

    # ------------------------------------------------------------------ changing

    def apply(self, put: dict[bytes, Change], drop: Iterable[bytes]) -> None:
        for path in drop:
            if self.changes.pop(path, None) is not None:
                self._touched(path)
                self._below[parent_of(path)].discard(name_of(path))
        for path, change in put.items():
            self.changes[path] = change
            self._below[parent_of(path)].add(name_of(path))
            self._touched(path)

    def set_head(self, head_tree: BlobId | None) -> None:
        self.head_tree = head_tree
        self._merged.clear()

    def _touched(self, path: bytes) -> None:
        self._merged.pop(parent_of(path), None)
        self._merged.pop(path, None)

    def rows_under(self, top: bytes) -> list[bytes]:
        return [p for p in self.changes if is_under(p, top)]

    def base_of(self, path: bytes) -> TreeEntry | None:
        """What `path` was in the head its change is made on: the row's base if it has
        one, else the served head's entry (change rows ignored)."""
        row = self.changes.get(path)
        if row is not None:
            return row.base
        entries = self._tree(self.head_tree).entries if self.head_tree else {}
        parts = path.split(b"/")
        for i, part in enumerate(parts):
            e = entries.get(part)
            if e is None or i == len(parts) - 1:
                return e
            if e.type is not EntryType.DIR or e.subtree is None:
                return None
            entries = self._tree(e.subtree).entries
        return None

    def plan_put(
        self, path: bytes, entry: TreeEntry, dirty: int | None = None
    ) -> dict[bytes, Change]:
        return {path: Change(replace(entry, name=name_of(path)), dirty, 0, self.base_of(path))}

    def plan_remove(self, path: bytes) -> tuple[dict[bytes, Change], list[bytes]]:
        """Delete `path` (and, for a directory, the rows below it)."""
        return {path: Change(None, None, 0, self.base_of(path))}, self.rows_under(path)

    def plan_rename(self, old: bytes, new: bytes) -> tuple[dict[bytes, Change], list[bytes]]:
        """Move `old` to `new` (replacing what `new` was): rows only, no content moves.
        The rows below `old` move along; their base is the head's entry at the new path."""
        entry = self.entry(old)
        assert entry is not None
        old_row = self.changes.get(old)
        dirty = old_row.dirty if old_row else None
        put = {
            new: Change(replace(entry, name=name_of(new)), dirty, 0, self.base_of(new)),
            old: Change(None, None, 0, self.base_of(old)),
        }
        drop = self.rows_under(new) + self.rows_under(old)
        for p in self.rows_under(old):
            moved = new + p[len(old) :]
            put[moved] = replace(self.changes[p], base=self.base_of(moved))
        return put, [p for p in drop if p not in put]


def overlay(
    base: Flat,
    changes: dict[bytes, Change],
    expand: Callable[[BlobId], Flat],
    content: dict[bytes, TreeEntry],
) -> Flat:
    """The drive's state as a flat map (what sync's merge calls "local"): the head's
    map with the change rows applied, parents before children. A directory row with
    another subtree brings that subtree's map (`expand`); a changed file's entry is
    its chunked content from `content`."""
    out = dict(base)

    def clear_below(path: bytes) -> None:
        for p in [p for p in out if is_under(p, path)]:
            del out[p]

    for path in sorted(changes, key=lambda p: (p.count(b"/"), p)):
        e = changes[path].entry
        old = out.get(path)
        if e is None:
            out.pop(path, None)
            if old is not None and old.type is EntryType.DIR:
                clear_below(path)
            continue
        replaced = e.type is not EntryType.DIR or (old is not None and old.subtree != e.subtree)
        if old is not None and old.type is EntryType.DIR and replaced:
            clear_below(path)
            old = None
        if e.type is EntryType.DIR and old is None and e.subtree is not None:
            out.update({join(path, p): sub for p, sub in expand(e.subtree).items()})
        out[path] = content.get(path, e)
    return out


class TreeCache:
    """Decoded trees: an LRU in memory (bounded by entries), the plaintext on disk
    (trees/<2 hex>/<hex>, so browsing works offline and after a restart)."""

    def __init__(self, root: Path, max_entries: int = 400_000) -> None:
        self.root = root
        self.max_entries = max_entries
        self._lru: OrderedDict[BlobId, Listing] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        root.mkdir(mode=0o700, exist_ok=True)

    def _path(self, tree_id: BlobId) -> Path:
        h = tree_id.hex()
        return self.root / h[:2] / h

    def cached(self, tree_id: BlobId) -> Listing | None:
        with self._lock:
            got = self._lru.get(tree_id)
            if got is not None:
                self._lru.move_to_end(tree_id)
                return got
        try:
            raw = self._path(tree_id).read_bytes()
        except FileNotFoundError:
            return None
        return self._remember(tree_id, raw)

    def on_disk(self, tree_id: BlobId) -> bool:
        return tree_id in self._lru or self._path(tree_id).exists()

    def store(self, tree_id: BlobId, plaintext: bytes) -> Listing:
        """A tree fetched (and authenticated) from the repository."""
        listing = self._remember(tree_id, plaintext)  # decodes: a hostile tree fails here
        path = self._path(tree_id)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(plaintext)
        tmp.replace(path)
        return listing

    def _remember(self, tree_id: BlobId, plaintext: bytes) -> Listing:
        entries = {e.name: e for e in tree.decode(plaintext)}
        listing = Listing(list(entries), entries)  # decode checks they are sorted
        with self._lock:
            if tree_id not in self._lru:
                self._held += len(entries)
            self._lru[tree_id] = listing
            while self._held > self.max_entries and len(self._lru) > 1:
                _, old = self._lru.popitem(last=False)
                self._held -= len(old.entries)
        return listing
