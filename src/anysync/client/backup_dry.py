"""What a backup will go through, without reading any content: the files it meets
(`TreeWalk`, also the progress line's scan-ahead) and, for `anysync backup --dry-run`,
what it would read.

The same decisions as the backup walker, on the same inputs: the exclusions
(client/exclude.py), AnySync mounts never entered, special files skipped, and the stat
cache (a file whose inode, size, mtime and ctime match its row is reused, not read).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from anysync.client.exclude import Exclusions
from anysync.client.statedb import StateDB, unchanged


class TreeWalk:
    """The regular files below `paths`, as (directory, name, lstat), a directory's files
    together. The given paths themselves are never excluded (as in the backup); what
    was excluded and what could not be read is counted as the walk goes."""

    def __init__(self, paths: list[Path], exclude: Exclusions, skip: frozenset[bytes]) -> None:
        self.paths = [os.fsencode(os.path.abspath(p)) for p in paths]
        self.exclude = exclude
        self.skip = skip  # AnySync mounts
        self.excluded = 0
        self.unreadable: list[str] = []

    def files(self) -> Iterator[tuple[bytes, bytes, os.stat_result]]:
        pending: list[bytes] = []
        for top in self.paths:
            st = self._lstat(top)
            if st is not None and stat.S_ISREG(st.st_mode):
                yield (*os.path.split(top), st)
            elif st is not None and stat.S_ISDIR(st.st_mode):
                pending.append(top)
        while pending:
            directory = pending.pop()
            try:
                names = sorted(os.listdir(directory))
            except OSError as exc:
                self.unreadable.append(f"{os.fsdecode(directory)}: {exc.strerror}")
                continue
            for name in names:
                path = os.path.join(directory, name)
                st = None if path in self.skip else self._lstat(path)
                if st is None:
                    continue
                if self.exclude.active and self.exclude.excluded(path, st):
                    self.excluded += 1
                elif stat.S_ISREG(st.st_mode):
                    yield directory, name, st
                elif stat.S_ISDIR(st.st_mode):
                    pending.append(path)

    def _lstat(self, path: bytes) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except OSError as exc:
            self.unreadable.append(f"{os.fsdecode(path)}: {exc.strerror}")
            return None


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
    walk = TreeWalk(paths, exclude, skip)
    rows_of, rows = None, {}
    for directory, name, st in walk.files():
        if directory != rows_of:  # one stat-cache query per directory, as the backup
            rows_of, rows = directory, state.stats_in(directory, cache_key)[0]
        out.files += 1
        out.bytes += st.st_size
        cached = rows.get(name)
        if cached is None or not unchanged(cached, st):
            out.to_read += 1
            out.to_read_bytes += st.st_size
    out.excluded, out.unreadable = walk.excluded, walk.unreadable
    return out
