"""`anysync backup --dry-run`: what a backup would go through and what it would read,
with nothing read, uploaded or committed.

The same decisions as the backup walker, on the same inputs: the exclusions
(client/exclude.py) and the stat cache (a file whose inode, size, mtime and ctime match
its row is reused, client/backup.py `_unchanged`). Special files and AnySync mounts are
not counted, as the backup skips them; a path that cannot be read is listed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from anysync.client.exclude import Exclusions
from anysync.client.localfs import stat_key
from anysync.client.statedb import CachedStat, StateDB


@dataclass
class DryRun:
    files: int = 0  # regular files the snapshot would hold
    bytes: int = 0
    to_read: int = 0  # of them, new or changed since the last backup: read and chunked
    to_read_bytes: int = 0
    excluded: int = 0
    unreadable: list[str] = field(default_factory=list)


def dry_run(
    state: StateDB,
    cache_key: bytes,
    paths: list[Path],
    exclude: Exclusions,
    skip: frozenset[bytes] = frozenset(),
) -> DryRun:
    out = DryRun()
    pending = [os.fsencode(os.path.abspath(p)) for p in paths]
    first = True  # the given paths themselves are never excluded (as in the backup)
    while pending:
        batch, pending = pending, []
        for path in batch:
            pending += _visit(state, cache_key, path, exclude, skip, out, first)
        first = False
    return out


def _visit(
    state: StateDB,
    key: bytes,
    path: bytes,
    exclude: Exclusions,
    skip: frozenset[bytes],
    out: DryRun,
    given: bool,
) -> list[bytes]:
    """Count `path`; the directories below it to visit next."""
    if path in skip:
        return []
    try:
        st = os.lstat(path)
    except OSError as exc:
        out.unreadable.append(f"{os.fsdecode(path)}: {exc.strerror}")
        return []
    if not given and exclude.active and exclude.excluded(path, st):
        out.excluded += 1
        return []
    if stat.S_ISREG(st.st_mode):
        directory, name = os.path.split(path)
        cached = state.stats_in(directory, key)[0].get(name)
        _count_file(out, st, cached)
        return []
    if not stat.S_ISDIR(st.st_mode):
        return []
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        out.unreadable.append(f"{os.fsdecode(path)}: {exc.strerror}")
        return []
    cached_here = state.stats_in(path, key)[0]
    below: list[bytes] = []
    for name in names:
        child = os.path.join(path, name)
        if child in skip:
            continue
        try:
            child_st = os.lstat(child)
        except OSError as exc:
            out.unreadable.append(f"{os.fsdecode(child)}: {exc.strerror}")
            continue
        if exclude.active and exclude.excluded(child, child_st):
            out.excluded += 1
        elif stat.S_ISREG(child_st.st_mode):
            _count_file(out, child_st, cached_here.get(name))
        elif stat.S_ISDIR(child_st.st_mode):
            below.append(child)
    return below


def _count_file(out: DryRun, st: os.stat_result, cached: CachedStat | None) -> None:
    out.files += 1
    out.bytes += st.st_size
    if cached is None or (cached.ino, cached.size, cached.mtime_ns, cached.ctime_ns) != stat_key(
        st
    ):
        out.to_read += 1
        out.to_read_bytes += st.st_size
