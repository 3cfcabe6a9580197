"""Scan a sync folder: what is on disk now, as entries, reading only what changed.

A file whose stat matches its record is not read. A changed or new file is chunked and
its chunks are queued for upload (the repository skips those the server holds).

A chunk list taken from a record may name chunks a prune has since deleted: before the
scan is used, the server is asked about them in one batch, and the files naming a lost
one are read again (docs/prune-design.md §7).

An AnySync FUSE mount (a drive, a snapshot view) inside the folder is never entered:
reading it would download the repository to sync it into itself. It is left alone like
a path that cannot be read (unknown, not deleted), with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from anysync.client import localfs
from anysync.client.chunker import Chunker
from anysync.client.localfs import is_temp
from anysync.client.mounts import anysync_mounts
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry, check_name
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.state import Record, StatKey, stat_key, under
from anysync.types import BlobId

log = logging.getLogger(__name__)


@dataclass
class Scan:
    entries: dict[bytes, TreeEntry] = field(default_factory=dict)  # managed paths on disk
    stats: dict[bytes, StatKey] = field(default_factory=dict)
    files_read: int = 0
    warnings: list[str] = field(default_factory=list)
    temps: list[bytes] = field(default_factory=list)  # leftover temp files of a killed pass
    # Paths that could not be read (b"": the folder itself). What is at or under one is
    # unknown, not deleted: the pass keeps its last synced state (engine.py).
    unreadable: set[bytes] = field(default_factory=set)
    # Files whose chunk list came from a record, not from reading them.
    reused: dict[bytes, tuple[BlobId, ...]] = field(default_factory=dict)

    def cannot_read(self, rel: bytes, exc: OSError | str) -> None:
        why = exc if isinstance(exc, str) else exc.strerror or str(exc)
        self.warnings.append(f"cannot read {os.fsdecode(rel) or 'the folder'}: {why}")
        self.unreadable.add(rel)

    def not_entered(self, rel: bytes) -> None:
        """An AnySync mount at `rel` (b"": the folder is in one): left alone, as unknown."""
        what = f"{os.fsdecode(rel)}: it is" if rel else "the folder: it is in"
        self.warnings.append(f"not syncing {what} an AnySync mount")
        self.unreadable.add(rel)


def scan(
    root_fd: int,
    rules: IgnoreRules,
    excluded: set[bytes],
    records: dict[bytes, Record],
    repo: Repository,
    chunker: Chunker,
    mounts: frozenset[bytes] | None = None,
    changed: frozenset[bytes] | None = None,
) -> Scan:
    """The folder as it is now, every chunk it names held by the server or queued.

    `mounts`: the AnySync mounts not to enter, as mounts_in() gives them (None: the
    ones mounted now). `changed`: the only paths that may differ from their records
    (from inotify, in watch mode); only they, and what is under them, are read. None
    (and a set holding the folder itself, b""): every path."""
    if changed is not None and b"" in changed:
        changed = None
    if mounts is None:
        mounts = _mounts_at(root_fd)
    if b"" in mounts:
        out = Scan()
        out.not_entered(b"")
        return out
    trusted = records
    warnings: list[str] = []
    files_read = 0
    while True:
        out = _scan_once(root_fd, rules, excluded, trusted, repo, chunker, mounts, changed)
        files_read += out.files_read
        lost = repo.missing(c for chunks in out.reused.values() for c in chunks)
        if not lost:
            out.warnings += warnings
            out.files_read = files_read
            return out
        # Scan again, trusting neither those records nor re-reading what this scan
        # read: its files are records now, with the chunks just queued.
        stale = [p for p, chunks in out.reused.items() if lost.intersection(chunks)]
        warnings.append(
            f"{len(lost)} chunk(s) of {len(stale)} unchanged file(s) are no longer on the "
            "server; read them again"
        )
        read = {
            p: Record(e, out.stats[p])
            for p, e in out.entries.items()
            if e.type is EntryType.FILE and p not in out.reused
        }
        trusted = {p: r for p, r in trusted.items() if not lost.intersection(r.entry.chunks)} | read
        changed = None  # a path whose record is no longer trusted must be looked at


def mounts_in(root: Path, mounts: Sequence[Path]) -> frozenset[bytes]:
    """The mounts at or under the folder `root` (a real path, as `mounts` are), relative
    to it; b"" when the folder itself is at or inside one of them."""
    out: set[bytes] = set()
    for mount in mounts:
        if mount == root or mount in root.parents:
            out.add(b"")
        elif root in mount.parents:
            out.add(os.fsencode(mount.relative_to(root)))
    return frozenset(out)


def _mounts_at(root_fd: int) -> frozenset[bytes]:
    """The AnySync mounts now at or under the open folder `root_fd` (mounts_in)."""
    mounts = anysync_mounts()
    if not mounts:
        return frozenset()
    try:  # the kernel's path of the open folder: the spelling mountinfo uses
        root = Path(os.readlink(f"/proc/self/fd/{root_fd}"))
    except OSError:
        return frozenset()
    return mounts_in(root, mounts)


def _scan_once(
    root_fd: int,
    rules: IgnoreRules,
    excluded: set[bytes],
    records: dict[bytes, Record],
    repo: Repository,
    chunker: Chunker,
    mounts: frozenset[bytes],
    changed: frozenset[bytes] | None = None,
) -> Scan:
    walker = _Walker(rules, excluded, records, repo, chunker, mounts)
    if changed is None:
        walker.walk(root_fd, b"")
    else:
        walker.some(root_fd, changed)
    return walker.out


class _Walker:
    """One scan: `walk` lists a directory and visits each name in it; `some` visits only
    the given paths (and what is under them) and takes every other one from its record."""

    def __init__(
        self,
        rules: IgnoreRules,
        excluded: set[bytes],
        records: dict[bytes, Record],
        repo: Repository,
        chunker: Chunker,
        mounts: frozenset[bytes],
    ) -> None:
        self.rules, self.excluded, self.records = rules, excluded, records
        self.repo, self.chunker, self.mounts = repo, chunker, mounts
        self.out = Scan()
        self._by_stat: dict[StatKey, Record] | None = None

    def by_stat(self, key: StatKey) -> Record | None:
        # A file inside a renamed or moved directory keeps its whole stat (inode, size,
        # mtime and ctime): reuse its chunk list instead of reading it again. A file
        # renamed itself gets a new ctime and is read again: a same-size edit that
        # restores the mtime also changes only the ctime, so matching without it would
        # keep stale chunks (#20.6). Built at the first new path only.
        if self._by_stat is None:
            self._by_stat = {
                r.stat: r for r in self.records.values() if r.entry.type is EntryType.FILE
            }
        return self._by_stat.get(key)

    def walk(self, dir_fd: int, prefix: bytes) -> None:
        try:
            names = localfs.children(dir_fd)
        except OSError as exc:
            self.out.cannot_read(prefix[:-1], exc)
            return
        for name in names:
            self.visit(dir_fd, prefix, name)

    def visit(self, dir_fd: int, prefix: bytes, name: bytes) -> None:
        out, rel = self.out, prefix + name
        if rel in self.mounts:  # not even stat-ed: a hung mount would hang the scan
            if not (under(rel, self.excluded) or self.rules.ignored(rel, True)):
                out.not_entered(rel)
            return
        if is_temp(name):
            out.temps.append(rel)
            return
        try:
            check_name(name)
            st = localfs.lstat_in(dir_fd, name)
        except FileNotFoundError:
            return  # deleted since the listing: a deletion like any other
        except OSError as exc:
            out.cannot_read(rel, exc)
            return
        except Exception as exc:  # a name we cannot store
            out.warnings.append(f"skipping {os.fsdecode(rel)}: {exc}")
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if under(rel, self.excluded) or self.rules.ignored(rel, is_dir):
            return
        record = self.records.get(rel) or self.by_stat(stat_key(st))
        entry = _entry(dir_fd, rel, st, record, self.repo, self.chunker, out)
        if entry is None:
            return
        out.entries[rel] = entry
        out.stats[rel] = stat_key(st)
        if is_dir:
            _descend(dir_fd, name, rel, out, self.walk)

    def some(self, root_fd: int, changed: frozenset[bytes]) -> None:
        """Visit the paths in `changed`; every other path is as its record says (watch
        mode: inotify named what changed). A path whose directory has no record (made
        since the last pass) widens to that directory."""
        tops: set[bytes] = set()
        for path in changed:
            parent = path.rpartition(b"/")[0]
            while parent and not self._dir_recorded(parent):
                path, parent = parent, parent.rpartition(b"/")[0]
            tops.add(path)
        tops = {p for p in tops if not under(p.rpartition(b"/")[0], tops)}
        for p, r in self.records.items():
            if not under(p, tops):
                self.out.entries[p] = r.entry
                self.out.stats[p] = r.stat
                if r.entry.type is EntryType.FILE:
                    self.out.reused[p] = r.entry.chunks
        for path in sorted(tops):
            self._visit_path(root_fd, path)

    def _dir_recorded(self, path: bytes) -> bool:
        r = self.records.get(path)
        return r is not None and r.entry.type is EntryType.DIR

    def _visit_path(self, root_fd: int, path: bytes) -> None:
        """Visit one path, its directory opened component by component (no symlink
        followed); absent if that directory is gone."""
        parent, _, name = path.rpartition(b"/")
        fds: list[int] = []
        try:
            fd = root_fd
            for part in parent.split(b"/") if parent else []:
                fd = localfs.open_child_dir(fd, part, None)
                fds.append(fd)
            self.visit(fd, parent + b"/" if parent else b"", name)
        except (FileNotFoundError, localfs.NotADir):
            pass  # its directory is gone or replaced: that change has its own event
        except OSError as exc:
            self.out.cannot_read(parent, exc)
        finally:
            for fd in fds:
                os.close(fd)


def _descend(
    dir_fd: int, name: bytes, rel: bytes, out: Scan, walk: Callable[[int, bytes], None]
) -> None:
    """Walk the subdirectory `name` (at `rel`), opened without following a symlink: one
    swapped in after its stat is warned about, never followed out of the folder."""
    try:
        fd = localfs.open_child_dir(dir_fd, name, None)
    except OSError as exc:
        out.cannot_read(rel, exc)
        return
    except localfs.NotADir:
        out.cannot_read(rel, "it is no longer a directory")
        return
    try:
        walk(fd, rel + b"/")
    finally:
        os.close(fd)


def _entry(
    dir_fd: int,
    rel: bytes,
    st: os.stat_result,
    record: Record | None,
    repo: Repository,
    chunker: Chunker,
    out: Scan,
) -> TreeEntry | None:
    name = rel.rpartition(b"/")[2]
    if stat.S_ISDIR(st.st_mode):
        return TreeEntry(name, EntryType.DIR, st.st_mode & 0o7777, 0)
    if stat.S_ISLNK(st.st_mode):
        try:
            target = localfs.read_link(dir_fd, name)
        except OSError as exc:
            out.cannot_read(rel, exc)
            return None
        return TreeEntry(name, EntryType.SYMLINK, 0o777, st.st_mtime_ns, target=target)
    if not stat.S_ISREG(st.st_mode):
        return None
    if record is not None and record.stat == stat_key(st) and record.entry.type is EntryType.FILE:
        # A chmod or rename changes no content: keep the chunks, take name and mode anew.
        out.reused[rel] = record.entry.chunks
        mode = st.st_mode & 0o7777
        if record.entry.name == name and record.entry.mode == mode:
            return record.entry  # the usual case: no copy
        return replace(record.entry, name=name, mode=mode)
    try:
        with localfs.open_file(dir_fd, name) as f:
            chunks, sizes = repo.save_data(chunker.file_chunks(f, st.st_size))
    except OSError as exc:
        out.cannot_read(rel, exc)
        return None
    out.files_read += 1
    mode = st.st_mode & 0o7777
    return TreeEntry(
        name, EntryType.FILE, mode, st.st_mtime_ns, sum(sizes), chunks, chunk_sizes=sizes
    )


def pending(
    root: Path, rules: IgnoreRules, excluded: set[bytes], records: dict[bytes, Record]
) -> dict[bytes, str]:
    """Paths that differ from their records, by stat alone (nothing is read).

    Values: "new", "modified" or "deleted".
    """
    out: dict[bytes, str] = {}
    seen: set[bytes] = set()
    ignored = Scan()  # what cannot be read is not a change to report here

    def walk(dir_fd: int, prefix: bytes) -> None:
        try:
            names = localfs.children(dir_fd)
        except OSError:
            return
        for name in names:
            rel = prefix + name
            if rel in mounts:
                continue  # what is in it is unknown, not new or deleted
            try:
                st = localfs.lstat_in(dir_fd, name)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if under(rel, excluded) or rules.ignored(rel, is_dir):
                continue
            seen.add(rel)
            record = records.get(rel)
            if record is None:
                out[rel] = "new"
            elif not is_dir and record.stat != stat_key(st):
                out[rel] = "modified"
            if is_dir:
                _descend(dir_fd, name, rel, ignored, walk)

    root_fd = localfs.open_root(root)
    try:
        mounts = _mounts_at(root_fd)
        if b"" in mounts:
            return {}
        walk(root_fd, b"")
    finally:
        os.close(root_fd)
    unknown = excluded | mounts
    for rel in records:
        if rel not in seen and not under(rel, unknown):
            out[rel] = "deleted"
    return out
