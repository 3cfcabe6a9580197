"""Three-way merge of folder states: base (what this device last agreed on), local
(what is on disk now) and remote (the ref's head). Pure: no I/O.

Rules, per path:
- changed on one side only → that side;
- changed the same way on both → either (remote's metadata);
- deleted on one side, modified on the other → the modified version (modify beats delete);
- changed differently on both → remote keeps the name (it won the race to the ref) and
  the local version is kept beside it as `name (conflict from DEVICE YYYY-MM-DD HHMMSS).ext`
  (at most 255 bytes: a long stem is shortened; `.tar.gz` stays whole; no nested tags);
- a directory and a file at one path → the directory keeps the name, the file moves to a
  conflict name;
then every entry's parent is made a directory that exists, so the result is a tree.
A rename needs no rule: it is a delete plus an add of the same content, which the
server already holds, and the apply step renames the local file instead of downloading.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat, parent_of, same


@dataclass
class MergeResult:
    merged: Flat
    conflicts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (path, conflict copy)


NAME_MAX = 255  # bytes in one name on common file systems: every copy's name fits
_TAG = re.compile(rb" \(conflict from .* \d{4}-\d\d-\d\d \d{6}(?: \d+)?\)$", re.DOTALL)
# A compressed archive's two suffixes stay together: `a.tar.gz` → `a (conflict …).tar.gz`.
_COMPRESSED = {b"gz", b"bz2", b"xz", b"zst", b"lz", b"lz4", b"lzma", b"z", b"br"}


def _split(name: bytes) -> tuple[bytes, bytes]:
    """(stem, extension with its dot); a dotfile like `.bashrc` has no extension."""
    stem, dot, ext = name.rpartition(b".")
    if not stem or not dot:
        return name, b""
    if ext.lower() in _COMPRESSED:
        inner, dot2, ext2 = stem.rpartition(b".")
        if inner and dot2 and 1 <= len(ext2) <= 5 and ext2.isalnum():
            return inner, b"." + ext2 + b"." + ext
    return stem, b"." + ext


def _cut(stem: bytes, size: int) -> bytes:
    """The first `size` bytes of `stem`, not ending inside a UTF-8 character."""
    cut = stem[: max(size, 0)]
    while cut and len(cut) < len(stem) and stem[len(cut)] & 0xC0 == 0x80:
        cut = cut[:-1]
    return cut


def is_conflict_name(name: bytes) -> bool:
    """Is this the name of a conflict copy (as `conflict_name` makes them)?"""
    return _TAG.search(_split(name)[0]) is not None


def conflict_name(
    path: bytes, device: str, when: float, taken: Flat, name_max: int = NAME_MAX
) -> bytes:
    """`stem (conflict from DEVICE YYYY-MM-DD HHMMSS[ N]).ext`, unique in `taken`, at
    most `name_max` bytes (the stem is shortened); a copy of a copy gets one tag only."""
    parent, sep, name = path.rpartition(b"/")
    stem, ext = _split(name)
    stem = _TAG.sub(b"", stem) or stem
    who = device.encode().replace(b"/", b"_").replace(b"\x00", b"_")[:64]
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when)).encode()
    if len(ext) > name_max // 2:
        stem, ext = stem + ext, b""
    for n in range(1, 1000):
        extra = b"" if n == 1 else f" {n}".encode()
        tag = b" (conflict from " + who + b" " + stamp + extra + b")"
        candidate = _cut(stem, name_max - len(tag) - len(ext)) + tag + ext
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
