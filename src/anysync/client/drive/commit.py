"""A drive's sync pass: its change rows merged with the ref's head, committed by
compare-and-swap, through the same merge and commit rules as a sync folder
(sync/merge.py: conflict copies, modify beats delete, the directory beats the file).

Blocking (network, disk): the daemon runs it in a worker thread on a snapshot of the
rows. "base" is the head the drive served when the rows were made, "local" that head
with the rows applied, "remote" the ref's head now. Nothing local changes here except
the caches: the daemon drops the rows a commit holds only after the ref moved.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from anysync.client.chunker import Chunker
from anysync.client.drive.cache import ChunkCache
from anysync.client.drive.meta import Change, Head
from anysync.client.drive.namespace import Flat, Listing, TreeCache, join, overlay
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook, Snapshot
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync import flat
from anysync.client.sync.engine import Device, same_state
from anysync.client.sync.merge import merge
from anysync.types import BlobId, BlobKind

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    head: Head  # what the drive serves from now on
    committed: bool
    conflicts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (path, copy)
    changed: list[bytes] = field(default_factory=list)  # paths whose entry differs from before


class Trees:
    """Trees for a pass: the daemon's TreeCache, filled from the repository."""

    def __init__(self, repo: Repository, cache: TreeCache) -> None:
        self.repo = repo
        self.cache = cache
        self._prefetched: BlobId | None = None  # the last root known to be all on disk

    def ensure(self, ids: list[BlobId]) -> None:
        wanted = [i for i in dict.fromkeys(ids) if not self.cache.on_disk(i)]
        if not wanted:
            return
        for bid, data in self.repo.load_many(BlobKind.TREE, wanted).items():
            if isinstance(data, Exception):
                raise data
            self.cache.store(bid, data)

    def listing(self, tree_id: BlobId) -> Listing:
        got = self.cache.cached(tree_id)
        if got is None:
            self.ensure([tree_id])
            got = self.cache.cached(tree_id)
            assert got is not None
        return got

    def prefetch(self, root: BlobId | None) -> None:
        """Every tree under `root` on disk, one batch per level: browsing then works
        offline, and a deep `ls -lR` waits on no round trip."""
        if root == self._prefetched:
            return
        level = [root] if root is not None else []
        while level:
            self.ensure(level)
            level = [
                e.subtree
                for tid in level
                for e in self.listing(tid).entries.values()
                if e.type is EntryType.DIR and e.subtree is not None
            ]
        self._prefetched = root

    def load_tree(self, tree_id: BlobId) -> list[TreeEntry]:
        return list(self.listing(tree_id).entries.values())

    def flat(self, root: BlobId | None) -> Flat:
        return flat.load(self, root) if root is not None else {}

    def changed(self, old: BlobId | None, new: BlobId | None, prefix: bytes = b"") -> list[bytes]:
        """Paths whose entries differ between two trees (descending only into
        directories whose subtree changed)."""
        if old == new:
            return []
        before = self.listing(old).entries if old is not None else {}
        after = self.listing(new).entries if new is not None else {}
        out = []
        for name in before.keys() | after.keys():
            a, b = before.get(name), after.get(name)
            if a == b:
                continue
            path = join(prefix, name)
            out.append(path)
            a_dir = a.subtree if a is not None and a.type is EntryType.DIR else None
            b_dir = b.subtree if b is not None and b.type is EntryType.DIR else None
            if a_dir is not None or b_dir is not None:
                out += self.changed(a_dir, b_dir, path)
        return out


def chunk_dirty(
    repo: Repository, cache: ChunkCache, chunker: Chunker, path: Path, entry: TreeEntry
) -> TreeEntry:
    """A working copy's content saved to the repository (queued) and to the chunk
    cache, so the file stays readable here after its working copy goes."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        ids: list[BlobId] = []
        sizes: list[int] = []
        for piece in chunker.file_chunks(f, st.st_size):
            bid = repo.save(BlobKind.DATA, piece)
            if not cache.has(bid):
                cache.put(bid, piece)
            ids.append(bid)
            sizes.append(len(piece))
    return replace(
        entry,
        size=sum(sizes),
        mtime_ns=st.st_mtime_ns,
        chunks=tuple(ids),
        chunk_sizes=tuple(sizes),
    )


def run_pass(
    repo: Repository,
    book: RefBook,
    trees: Trees,
    cache: ChunkCache,
    chunker: Chunker,
    dirty_dir: Path,
    ref: str,
    name: str,
    device: Device,
    served: Head,
    rows: dict[bytes, Change],
) -> PassResult:
    if not rows:  # only the server's news: no merge, no flat maps of the whole folder
        _, now = book.head(ref)
        return _settled(trees, served, now, committed=False, conflicts=[])
    content = {}
    for p, c in list(rows.items()):
        if c.dirty is not None and c.entry is not None:
            try:
                content[p] = chunk_dirty(repo, cache, chunker, dirty_dir / str(c.dirty), c.entry)
            except FileNotFoundError:  # deleted, and killed before its row said so
                rows = rows | {p: Change(None, None, c.seq, c.base)}
    served_flat = trees.flat(served.tree_id)
    local = overlay(served_flat, rows, trees.flat, content)
    base = dict(served_flat)
    for p, c in rows.items():  # a change made on an older head merges against that head
        if c.base is None:
            base.pop(p, None)
        else:
            base[p] = c.base
    conflicts: list[tuple[bytes, bytes]] = []

    def make(head: Snapshot | None) -> Commit | None:
        nonlocal conflicts
        remote = trees.flat(head.commit.tree) if head else {}
        m = merge(base, local, remote, device.name)
        conflicts = m.conflicts
        if same_state(m.merged, remote):
            return None
        return Commit(
            kind="sync",
            tree=flat.build(repo, m.merged),
            parents=(head.id,) if head else (),
            ref=ref,
            counter=head.commit.counter + 1 if head else 1,
            time_ns=time.time_ns(),
            device_id=device.id,
            device=device.name,
            hostname=device.hostname,
            paths=(name,),
            retention=head.commit.retention if head else "",
        )

    done = book.advance(ref, make, fault="drive.commit-stored", what=f"drive {name}")
    made = done.committed is not None
    return _settled(trees, served, done.committed or done.head, made, conflicts if made else [])


def _settled(
    trees: Trees,
    served: Head,
    now: Snapshot | None,
    committed: bool,
    conflicts: list[tuple[bytes, bytes]],
) -> PassResult:
    """The pass's outcome: the head to serve (its trees all on disk) and what changed."""
    head = Head(now.id, now.commit.counter, now.commit.tree) if now else Head(None, 0, None)
    trees.prefetch(head.tree_id)
    changed = trees.changed(served.tree_id, head.tree_id)
    return PassResult(head, committed, conflicts, changed)
