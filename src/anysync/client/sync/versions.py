"""Every version of a file in a sync folder, and bringing one back.

Versions come from the folder's view (repo/history.py): edit commits are not versions,
and the folder states that a counting edit forgot are skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from anysync.client import localfs
from anysync.client.repo import history
from anysync.client.repo.history import RefView, Warn
from anysync.client.repo.refs import RefBook, RefStore
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, flat
from anysync.client.sync.lock import pass_lock
from anysync.client.sync.state import Folder, SyncState
from anysync.errors import NotFound, UsageError
from anysync.types import BlobId


@dataclass(frozen=True)
class Version:
    snapshot: history.Snapshot  # the commit that introduced this version
    entry: TreeEntry | None  # None: the file was deleted in this commit


def versions(
    repo: Repository,
    refs: RefStore,
    db: StateDB,
    folder: Folder,
    path: bytes,
    warn: Warn,
    counting: Set[BlobId] = frozenset(),
) -> list[Version]:
    """Newest first; one row per change of the file (content, mode, or deletion), down
    to the oldest commit that can still be read (an unreadable one is warned about).
    `counting`: the edit commits that count (history.view_of)."""
    view = _view(repo, refs, db, folder, warn, counting)
    return [] if view is None else _versions(repo, view, path)


def _view(
    repo: Repository,
    refs: RefStore,
    db: StateDB,
    folder: Folder,
    warn: Warn,
    counting: Set[BlobId],
) -> RefView | None:
    _, head = RefBook(refs, repo, db).head(folder.ref)
    return None if head is None else history.view_of(repo, head, counting, warn)


def _versions(repo: Repository, view: RefView, path: bytes) -> list[Version]:
    states = [(snap, flat.lookup(repo, snap.commit.tree, path)) for snap in view.snapshots]
    out = []
    for i, (snap, entry) in enumerate(states):
        older = states[i + 1][1] if i + 1 < len(states) else None
        if i + 1 == len(states) and entry is None:
            continue
        if not flat.same(entry, older) or i + 1 == len(states):
            out.append(Version(snap, entry))
    return out


def find_version(
    repo: Repository,
    refs: RefStore,
    db: StateDB,
    folder: Folder,
    path: bytes,
    spec: str,
    counting: Set[BlobId] = frozenset(),
) -> TreeEntry:
    spec = spec.lower()
    if len(spec) < 4:
        raise UsageError("give at least 4 hex digits of the version ID")
    view = _view(repo, refs, db, folder, lambda _: None, counting)
    found = [] if view is None else _versions(repo, view, path)
    matches = [v for v in found if v.snapshot.id.hex().startswith(spec)]
    gone = (
        [] if view is None else [f for b, f in view.forgotten.items() if b.hex().startswith(spec)]
    )
    if not matches and gone:
        raise NotFound(gone[0].message("version"))
    if not matches:
        raise NotFound(
            f"no version {spec} of {path.decode(errors='replace')}; see `anysync versions`"
        )
    if len(matches) > 1:
        raise UsageError(f"{spec!r} matches {len(matches)} versions; give more digits")
    entry = matches[0].entry
    if entry is None:
        raise UsageError("that version is the deletion of the file; pick an older one")
    return entry


def restore_version(
    repo: Repository,
    refs: RefStore,
    db: StateDB,
    folder: Folder,
    path: bytes,
    spec: str,
    dest: Path,
    home: Path,
    save_as: engine.Device | None,
    counting: Set[BlobId] = frozenset(),
) -> engine.PassResult | None:
    """Write version `spec` of `path` to `dest`, holding the pass lock so a pass cannot
    touch the half-written file. With `save_as`, a pass then commits it as the newest
    version (under the same lock) and its result is returned."""
    entry = find_version(repo, refs, db, folder, path, spec, counting)
    if entry.type is not EntryType.FILE:
        raise UsageError("only files have versions to restore")
    with pass_lock(home):
        _write(repo, entry, dest)
        if save_as is None:
            return None
        result = engine.run_pass(repo, refs, db, folder, save_as)
        SyncState(db).finished(folder.name, time.time_ns(), None)
        return result


def _write(repo: Repository, entry: TreeEntry, dest: Path) -> None:
    chunks = repo.stream(entry.chunks, entry.size)
    root_fd = localfs.open_root(dest.parent)
    try:
        name = os.fsencode(dest.name)
        current = localfs.current_at(root_fd, name)
        localfs.write_file(root_fd, name, chunks, entry.size, entry.mode, time.time_ns(), current)
    finally:
        os.close(root_fd)
