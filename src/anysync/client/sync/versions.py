"""Every version of a file in a sync folder, and bringing one back."""

from __future__ import annotations

from dataclasses import dataclass

from anysync.client.repo import history
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import flat
from anysync.client.sync.state import Folder
from anysync.errors import NotFound, UsageError


@dataclass(frozen=True)
class Version:
    snapshot: history.Snapshot  # the commit that introduced this version
    entry: TreeEntry | None  # None: the file was deleted in this commit


def versions(repo: Repository, db: StateDB, folder: Folder, path: bytes) -> list[Version]:
    """Newest first; one row per change of the file (content, mode, or deletion)."""
    _, head = history.verified_head(repo, db, folder.ref)
    if head is None:
        return []
    chain = history.history(repo, head)
    states = [(snap, flat.lookup(repo, snap.commit.tree, path)) for snap in chain]
    out = []
    for i, (snap, entry) in enumerate(states):
        older = states[i + 1][1] if i + 1 < len(states) else None
        if i + 1 == len(states) and entry is None:
            continue
        if not flat.same(entry, older) or i + 1 == len(states):
            out.append(Version(snap, entry))
    return out


def find_version(
    repo: Repository, db: StateDB, folder: Folder, path: bytes, spec: str
) -> TreeEntry:
    spec = spec.lower()
    if len(spec) < 4:
        raise UsageError("give at least 4 hex digits of the version ID")
    matches = [v for v in versions(repo, db, folder, path) if v.snapshot.id.hex().startswith(spec)]
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
