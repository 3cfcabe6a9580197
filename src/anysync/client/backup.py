"""Backup: walk paths into trees of chunked, encrypted blobs; record one commit.

A file whose inode, size, mtime and ctime match the stat cache is not read: its chunk
IDs are reused (the cache is written only after a snapshot holding them was
committed). A changed file is re-chunked and only chunks the server lacks are uploaded.
Unchanged directories produce identical tree blobs, which the server already holds.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from anysync import faults
from anysync.client.chunker import Chunker
from anysync.client.progress import Progress
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import CachedStat, StateDB
from anysync.errors import UsageError
from anysync.types import BlobId, BlobKind

log = logging.getLogger(__name__)


@dataclass
class BackupStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0  # total size of the files in the snapshot
    files_read: int = 0  # files whose content was read (new or changed)
    bytes_read: int = 0
    skipped: int = 0  # special files (fifos, sockets, devices)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackupResult:
    snapshot: history.Snapshot
    stats: BackupStats


@dataclass(frozen=True)
class Origin:
    """Who makes the commit."""

    device_id: int
    device: str
    hostname: str


def backup_ref_name(repo: Repository, hostname: str, paths: list[Path]) -> str:
    """An opaque, stable ref name per (host, set of paths): the server learns neither."""
    ident = b"\0".join([b"backup", hostname.encode(), *sorted(os.fsencode(p) for p in paths)])
    return "r-" + repo.blob_id(ident).hex()[:32]


def run_backup(
    repo: Repository,
    state: StateDB,
    paths: list[Path],
    origin: Origin,
    progress: Progress,
    message: str = "",
) -> BackupResult:
    sources = [Path(os.path.abspath(p)) for p in paths]
    names = [os.fsencode(p.name) for p in sources]
    if any(not n for n in names):
        raise UsageError("back up the directories under / rather than / itself")
    if len(set(names)) != len(names):
        raise UsageError("two of the paths have the same name; back them up separately")
    walker = _Walker(repo, state, Chunker(repo.keys.chunker_seed()), progress)
    entries = []
    for path, name in zip(sources, names, strict=True):
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise UsageError(f"cannot back up {path}: {exc.strerror}") from None
        parent_cache = state.stats_in(os.fsencode(path.parent))
        entry = walker.entry(os.fsencode(path), name, st, parent_cache.get(name))
        if entry is not None:
            entries.append(entry)
    root = repo.save_tree(entries)
    repo.finish()
    faults.point("backup.packs-done")
    stats = walker.stats
    ref = backup_ref_name(repo, origin.hostname, sources)

    def make(head: history.Snapshot | None) -> Commit:
        return Commit(
            kind="backup",
            tree=root,
            parents=(head.id,) if head else (),
            ref=ref,
            counter=head.commit.counter + 1 if head else 1,
            time_ns=time.time_ns(),
            device_id=origin.device_id,
            device=origin.device,
            hostname=origin.hostname,
            paths=tuple(str(p) for p in sources),
            message=message,
            stats={
                "files": stats.files,
                "dirs": stats.dirs,
                "bytes": stats.bytes,
                "bytes_added": repo.stats.bytes_stored,
            },
        )

    snap = history.advance(repo, state, ref, make)
    state.put_stats(walker.new_stats)  # only after the commit is safely referenced
    progress.done()
    return BackupResult(snap, stats)


class _Walker:
    def __init__(
        self, repo: Repository, state: StateDB, chunker: Chunker, progress: Progress
    ) -> None:
        self.repo = repo
        self.state = state
        self.chunker = chunker
        self.progress = progress
        self.stats = BackupStats()
        self.new_stats: list[tuple[bytes, CachedStat]] = []

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.stats.warnings.append(message)

    def entry(
        self, path: bytes, name: bytes, st: os.stat_result, cached: CachedStat | None = None
    ) -> TreeEntry | None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return self._dir(path, name, st)
        if stat.S_ISREG(mode):
            return self._file(path, name, st, cached)
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                self.warn(f"cannot read link {os.fsdecode(path)}: {exc.strerror}")
                return None
            self.stats.symlinks += 1
            return TreeEntry(name, EntryType.SYMLINK, 0o777, st.st_mtime_ns, target=target)
        self.stats.skipped += 1
        log.info("skipping special file %s", os.fsdecode(path))
        return None

    def _dir(self, path: bytes, name: bytes, st: os.stat_result) -> TreeEntry | None:
        try:
            with os.scandir(path) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            self.warn(f"cannot read directory {os.fsdecode(path)}: {exc.strerror}")
            return None
        entries = []
        cache = self.state.stats_in(path)
        for child in children:
            try:
                child_st = child.stat(follow_symlinks=False)
            except OSError as exc:
                self.warn(f"cannot stat {os.fsdecode(child.path)}: {exc.strerror}")
                continue
            entry = self.entry(child.path, child.name, child_st, cache.get(child.name))
            if entry is not None:
                entries.append(entry)
        self.stats.dirs += 1
        subtree = self.repo.save_tree(entries)
        return TreeEntry(name, EntryType.DIR, st.st_mode, st.st_mtime_ns, subtree=subtree)

    def _file(
        self, path: bytes, name: bytes, st: os.stat_result, cached: CachedStat | None
    ) -> TreeEntry | None:
        if cached is not None and (cached.ino, cached.size, cached.mtime_ns, cached.ctime_ns) == (
            _stat_key(st)
        ):
            # Cache rows are written only after a snapshot referencing these chunks was
            # committed, so the server holds them: reuse without reading or asking.
            chunks, size = cached.chunks, cached.size
        else:
            try:
                chunks, size = self._read(path, st)
            except OSError as exc:
                self.warn(f"cannot read {os.fsdecode(path)}: {exc.strerror}")
                return None
        self.stats.files += 1
        self.stats.bytes += size
        self.progress.add(files=1, nbytes=size)
        return TreeEntry(name, EntryType.FILE, st.st_mode, st.st_mtime_ns, size, chunks)

    def _read(self, path: bytes, st: os.stat_result) -> tuple[tuple[BlobId, ...], int]:
        """Chunk and queue a file's content. Returns its chunk IDs and the bytes read."""
        chunks: list[BlobId] = []
        size = 0
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY)
        with os.fdopen(fd, "rb", buffering=0) as f:
            # read(), not mmap: a file truncated while we read it cannot crash the
            # process with SIGBUS.
            for piece in self.chunker.file_chunks(f, st.st_size):
                chunks.append(self.repo.save(BlobKind.DATA, piece))
                size += len(piece)
            after = os.fstat(f.fileno())
        self.stats.files_read += 1
        self.stats.bytes_read += size
        if _stat_key(st) == _stat_key(after) and size == after.st_size:
            self.new_stats.append((path, CachedStat(*_stat_key(after), tuple(chunks))))
        else:
            self.warn(f"{os.fsdecode(path)} changed while it was read; backed up as read")
        return tuple(chunks), size


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must be equal for a file to count as unchanged since it was last read."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
