"""Three-way merge of folder states: base (what this device last agreed on), local
(what is on disk now) and remote (the ref's head). Pure: no I/O.

Rules, per path:
- changed on one side only → that side;
- changed the same way on both → either (remote's metadata);
- deleted on one side, modified on the other → the modified version (modify beats delete);
- changed differently on both → remote keeps the name (it won the race to the ref) and
  the local version is kept beside it as `name (conflict from DEVICE YYYY-MM-DD HHMMSS).ext`;
- a directory and a file at one path → the directory keeps the name, the file moves to a
  conflict name;
then every entry's parent is made a directory that exists, so the result is a tree.
A rename needs no rule: it is a delete plus an add of the same content, which the
server already holds, and the apply step renames the local file instead of downloading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat, parent_of, same


@dataclass
class MergeResult:
    merged: Flat
    conflicts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (path, conflict copy)


def conflict_name(path: bytes, device: str, when: float, taken: Flat) -> bytes:
    parent, sep, name = path.rpartition(b"/")
    stem, dot, ext = name.rpartition(b".")
    if not stem or not dot:  # no extension, or a dotfile like ".bashrc"
        stem, ext = name, b""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when))
    tag = f" (conflict from {device} {stamp})".encode()
    for n in range(1, 1000):
        extra = b"" if n == 1 else f" {n}".encode()
        candidate = stem + tag[:-1] + extra + b")" + (b"." + ext if ext else b"")
        full = parent + sep + candidate
        if full not in taken:
            return full
    raise RuntimeError("too many conflict copies")


def merge(
    base: Flat, local: Flat, remote: Flat, device: str, now: float | None = None
) -> MergeResult:
    now = time.time() if now is None else now
    merged: Flat = {}
    losers: list[tuple[bytes, TreeEntry]] = []
    for path in sorted(base.keys() | local.keys() | remote.keys()):
        b, lo, r = base.get(path), local.get(path), remote.get(path)
        if same(lo, r) or same(lo, b):
            pick = r
        elif same(r, b):
            pick = lo
        elif lo is None:
            pick = r  # deleted here, modified there
        elif r is None:
            pick = lo  # modified here, deleted there
        elif lo.type is EntryType.DIR and r.type is EntryType.DIR:
            pick = r  # only the mode differs
        elif r.type is EntryType.DIR:
            pick = r
            losers.append((path, lo))
        elif lo.type is EntryType.DIR:
            pick = lo
            losers.append((path, r))
        else:
            pick = r
            losers.append((path, lo))
        if pick is not None:
            merged[path] = pick
    result = MergeResult(merged)
    for path, entry in losers:
        _keep_as_conflict(result, path, entry, device, now)
    _make_parents(result, device, now)
    return result


def _keep_as_conflict(
    result: MergeResult, path: bytes, entry: TreeEntry, device: str, now: float
) -> None:
    copy = conflict_name(path, device, now, result.merged)
    result.merged[copy] = replace(entry, name=copy.rpartition(b"/")[2])
    result.conflicts.append((path, copy))


def _make_parents(result: MergeResult, device: str, now: float) -> None:
    """Every entry's parent must be a directory entry of the result."""
    merged = result.merged
    for path in sorted(merged, key=lambda p: p.count(b"/")):
        if path not in merged:
            continue  # moved aside as a conflict copy below
        parent = parent_of(path)
        while parent:
            existing = merged.get(parent)
            if existing is None:
                merged[parent] = TreeEntry(parent.rpartition(b"/")[2], EntryType.DIR, 0o755, 0)
            elif existing.type is not EntryType.DIR:
                # A file where a directory must be: the file becomes the conflict copy.
                del merged[parent]
                _keep_as_conflict(result, parent, existing, device, now)
                merged[parent] = TreeEntry(parent.rpartition(b"/")[2], EntryType.DIR, 0o755, 0)
            parent = parent_of(parent)
