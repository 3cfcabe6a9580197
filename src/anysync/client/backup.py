"""Backup: walk paths into trees of chunked, encrypted blobs; record one commit.

A file whose inode, size, mtime and ctime match a sound stat-cache row (its MAC
verified) is not read: its chunk IDs are reused, and before the commit the server is
asked, in one batch, whether it still holds every reused chunk; a file whose chunk it
lost is read again. A changed file is re-chunked and only chunks the server lacks are
uploaded. Unchanged directories produce identical tree blobs, which the server holds.

What cannot be read (permissions, I/O errors) and special files (fifos, sockets,
devices) are skipped and listed; the former make the snapshot partial (docs/design.md §7).
AnySync's own FUSE mounts (a drive, a snapshot view) are skipped and listed like special
files: reading one would download the repository only to back it up into itself.

A prune may delete blobs while a backup runs. The commit carries the generation the
backup's view of the server was read at, and the server refuses it if anything was
condemned since (docs/prune-design.md §7). Then, or when a later answer already showed
a newer generation, the backup asks again about every blob it relied on, reads again
the files whose chunks are gone (their trees are saved again by the same walk) and
retries.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from anysync import faults
from anysync.client import localfs
from anysync.client.chunker import MIN_SIZE, Chunker
from anysync.client.exclude import Exclusions
from anysync.client.localfs import stat_key
from anysync.client.mounts import anysync_mounts
from anysync.client.progress import Reporter
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook, RefStore
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import CachedStat, StateDB, local_state_key, unchanged
from anysync.errors import GcRaced, UsageError
from anysync.types import BlobId, BlobKind

log = logging.getLogger(__name__)

# How many times a backup checks again what the server holds after a prune raced it.
REVALIDATIONS = 8
# Files of at most SMALL_FILE bytes (one chunk) are read and hashed on READERS threads,
# at most READ_AHEAD files ahead of the walk: open, read and fstat release the GIL, so
# they overlap the walk's Python work and the sealing (D1's 100k small files).
SMALL_FILE = MIN_SIZE
READERS = 2
READ_AHEAD = 32
READ_AHEAD_BYTES = 4 * 1024 * 1024
# The rows read are staged in state.db this many at a time (issue #15: memory must not
# grow with the number of files).
STAGE_BATCH = 2000


@dataclass
class BackupStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0  # total size of the files in the snapshot
    files_read: int = 0  # files whose content was read (new or changed)
    bytes_read: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # not in the snapshot
    excluded: int = 0  # paths left out by --exclude, --exclude-caches, --one-file-system
    warnings: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """Some path could not be read. Special files alone do not make a snapshot
        partial: they hold no content to back up, and are skipped by design."""
        return any(not s.special for s in self.skipped)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str  # the OS error, or the kind of special file ("fifo", "socket", ...)
    special: bool = False


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


class Labels(NamedTuple):
    """What the user says about a snapshot: `-m` and `--tag`s (stored encrypted)."""

    message: str = ""
    tags: tuple[str, ...] = ()


NO_LABELS = Labels()


def backup_ref_name(repo: Repository, hostname: str, paths: list[Path]) -> str:
    """An opaque, stable ref name per (host, set of paths): the server learns neither."""
    ident = b"\0".join([b"backup", hostname.encode(), *sorted(os.fsencode(p) for p in paths)])
    return "r-" + repo.blob_id(ident).hex()[:32]


def run_backup(
    repo: Repository,
    refs: RefStore,
    state: StateDB,
    paths: list[Path],
    origin: Origin,
    progress: Reporter,
    labels: Labels = NO_LABELS,
    exclude: Exclusions | None = None,
) -> BackupResult:
    sources = [Path(os.path.abspath(p)) for p in paths]
    names = [os.fsencode(p.name) for p in sources]
    if any(not n for n in names):
        raise UsageError("back up the directories under / rather than / itself")
    if len(set(names)) != len(names):
        raise UsageError("two of the paths have the same name; back them up separately")
    mounts = mounts_to_skip(sources, anysync_mounts())
    for path in sources:
        if os.fsencode(path) in mounts:
            raise UsageError(f"{path} is in an AnySync mount; its files are in the repository")
        try:
            os.lstat(path)
        except OSError as exc:
            raise UsageError(f"cannot back up {path}: {exc.strerror}") from None
    cache_key = local_state_key(repo.keys.id_key)
    state.clear_staged()  # what a crashed run read was never referenced
    chunker = Chunker(repo.keys.chunker_seed())
    walker = _Walker(repo, state, cache_key, chunker, progress, skip=mounts, exclude=exclude)
    ref = backup_ref_name(repo, origin.hostname, sources)
    book = RefBook(refs, repo, state)
    try:
        snap = _walk_and_commit(repo, walker, book, ref, sources, names, origin, labels)
    finally:
        walker.close()
    if walker.damaged:
        walker.warn(
            f"dropped {walker.damaged} damaged entries of the local stat cache; "
            "read those files again"
        )
    state.promote_staged()  # only after the commit is referenced
    progress.done()
    return BackupResult(snap, walker.stats)


def _walk_and_commit(
    repo: Repository,
    walker: _Walker,
    book: RefBook,
    ref: str,
    sources: list[Path],
    names: list[bytes],
    origin: Origin,
    labels: Labels,
) -> history.Snapshot:
    """Walk, store the packs and commit; again after a prune raced the backup."""
    for _ in range(REVALIDATIONS + 1):
        root = _walk_confirmed(walker, sources, names)
        repo.finish()
        faults.point("backup.packs-done")
        if not repo.stale:
            try:
                return history.advance(
                    book, ref, _commit_maker(repo, walker, root, origin, ref, sources, labels)
                )
            except GcRaced:
                log.info("packs were condemned during the backup; checking what is left")
        walker.drop_lost(repo.revalidate())
    raise GcRaced("the account was pruned again and again during this backup; try again")


def mounts_to_skip(sources: list[Path], mounts: Sequence[Path]) -> frozenset[bytes]:
    """The AnySync mounts at, under or above `sources`, as paths the walk spells them
    (through a source's own spelling, which may pass a symlink): each mount under a
    source, and each source at or inside a mount. `mounts` are real paths (mountinfo)."""
    out: set[bytes] = set()
    for source in sources:
        real = Path(os.path.realpath(source))
        for mount in mounts:
            if mount == real or mount in real.parents:
                out.add(os.fsencode(source))
            elif real in mount.parents:
                out.add(os.fsencode(source / mount.relative_to(real)))
    return frozenset(out)


def _walk_confirmed(walker: _Walker, sources: list[Path], names: list[bytes]) -> BlobId:
    """Walk every source; returns the root tree, every reused chunk confirmed on the
    server."""
    root = walker.walk(sources, names)
    # A reused chunk that the server does not hold is never committed: forget the rows
    # naming one and walk again, which reads those files (and nothing read before).
    while lost := walker.repo.missing(c for chunks in walker.reused.values() for c in chunks):
        stale = [p for p, chunks in walker.reused.items() if lost.intersection(chunks)]
        walker.state.forget_stats(stale)
        walker.warn(
            f"{len(lost)} chunk(s) named by the local stat cache are not on the server; "
            f"read {len(stale)} file(s) again"
        )
        root = walker.walk(sources, names)
    return root


def _commit_maker(
    repo: Repository,
    walker: _Walker,
    root: BlobId,
    origin: Origin,
    ref: str,
    sources: list[Path],
    labels: Labels,
) -> Callable[[history.Snapshot | None], Commit]:
    stats = walker.stats

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
            message=labels.message,
            tags=labels.tags,
            stats={
                "files": stats.files,
                "dirs": stats.dirs,
                "bytes": stats.bytes,
                "bytes_added": repo.stats.bytes_stored,
            },
        )

    return make


_SPECIAL = {
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class _Walker:
    def __init__(
        self,
        repo: Repository,
        state: StateDB,
        key: bytes,
        chunker: Chunker,
        progress: Reporter,
        skip: frozenset[bytes] = frozenset(),
        exclude: Exclusions | None = None,
    ) -> None:
        self.repo = repo
        self.skip_mounts = skip  # paths of AnySync mounts: never entered, not even stat-ed
        self.exclude = exclude if exclude is not None and exclude.active else None
        self.state = state
        self.cache_key = key  # of the stat cache's row MACs
        self.chunker = chunker
        self.progress = progress
        self.stats = BackupStats()
        self.damaged = 0  # stat-cache rows that failed their MAC (dropped)
        # Read in this run: the rows to cache after the commit, and what a second walk
        # reuses. Their chunks are queued or uploaded in this session. They are staged in
        # state.db (pending_stats), a batch at a time, not held: 1M of them took ~1 GiB.
        self.staged: list[tuple[bytes, CachedStat]] = []
        # Reused from the stat cache by the last walk, by path: to be confirmed with
        # the server before the commit.
        self.reused: dict[bytes, tuple[BlobId, ...]] = {}
        self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="read")

    def close(self) -> None:
        self.readers.shutdown(wait=True, cancel_futures=True)

    def walk(self, sources: list[Path], names: list[bytes]) -> BlobId:
        """Walk every source into trees; returns the root tree's ID. What a walk counts
        starts afresh; what was read (and the warnings) adds up over walks."""
        done = self.stats
        self.stats = BackupStats(
            files_read=done.files_read, bytes_read=done.bytes_read, warnings=done.warnings
        )
        self.reused = {}
        entries = []
        for path, name in zip(sources, names, strict=True):
            try:
                parent_fd = localfs.open_root(path.parent)
            except OSError as exc:
                self.skip(os.fsencode(path), exc)
                continue
            try:
                entry = self.child(parent_fd, os.fsencode(path.parent), name)
            finally:
                os.close(parent_fd)
            if entry is not None:
                entries.append(entry)
        self.flush()  # a second walk looks the rows up there
        return self.repo.save_tree(entries)

    def flush(self) -> None:
        """Stage the rows read since the last flush in state.db."""
        self.state.put_stats(self.staged, self.cache_key, table="pending_stats")
        self.staged = []

    @property
    def fresh(self) -> dict[bytes, CachedStat]:
        """Every row read in this run, by path. Loads them all: for tests only."""
        self.flush()
        out: dict[bytes, CachedStat] = {}
        for path, _ in self.state.staged_chunks():
            directory, name = os.path.split(path)
            out[path] = self.done_in(directory)[name]
        return out

    def drop_lost(self, lost: set[BlobId]) -> None:
        """Blobs the server no longer holds (pruned during this run): the files naming
        one are read again by the next walk, from disk, not from a cache."""
        if not lost:
            return
        self.flush()
        stale = [p for p, chunks in self.state.staged_chunks() if lost.intersection(chunks)]
        stale += [p for p, chunks in self.reused.items() if lost.intersection(chunks)]
        self.state.forget_stats(stale)  # cached and staged rows alike
        again = f"; read {len(stale)} file(s) again" if stale else "; stored them again"
        self.warn(f"{len(lost)} blob(s) were pruned from the server during this backup{again}")

    def cached_in(self, directory: bytes) -> dict[bytes, CachedStat]:
        rows, damaged = self.state.stats_in(directory, self.cache_key)
        self.damaged += damaged
        return rows

    def done_in(self, directory: bytes) -> dict[bytes, CachedStat]:
        """The rows an earlier walk of this run read in `directory`, by name."""
        rows, damaged = self.state.stats_in(directory, self.cache_key, table="pending_stats")
        self.damaged += damaged
        return rows

    def warn(self, message: str) -> None:
        log.info("%s", message)  # the command prints the warnings at the end
        if message not in self.stats.warnings:  # a second walk may meet it again
            self.stats.warnings.append(message)

    def skip(self, path: bytes, exc: OSError) -> None:
        log.info("skipping %s: %s", os.fsdecode(path), exc.strerror)
        self.stats.skipped.append(Skipped(os.fsdecode(path), exc.strerror or str(exc)))

    def child(self, dir_fd: int, directory: bytes, name: bytes) -> TreeEntry | None:
        """The entry `name` of the open directory at `directory` (None: skipped)."""
        found = self._lstat(dir_fd, directory, name)
        if found is None:
            return None
        path, st = found
        cached = self.cached_in(directory).get(name)
        return self.entry(dir_fd, path, name, st, cached, done=self.done_in(directory).get(name))

    def _lstat(
        self, dir_fd: int, directory: bytes, name: bytes
    ) -> tuple[bytes, os.stat_result] | None:
        """The path and lstat of `name` in the open directory (None: skipped)."""
        path = os.path.join(directory, name)
        if path in self.skip_mounts:
            log.info("skipping AnySync mount %s", os.fsdecode(path))
            self.stats.skipped.append(Skipped(os.fsdecode(path), "AnySync mount", special=True))
            return None
        try:
            st = localfs.lstat_in(dir_fd, name)
        except OSError as exc:
            self.skip(path, exc)
            return None
        if self.exclude is not None and self.exclude.excluded(path, st):
            self.stats.excluded += 1
            return None
        return path, st

    def entry(
        self,
        dir_fd: int,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        cached: CachedStat | None = None,
        ahead: _ReadAhead | None = None,
        done: CachedStat | None = None,
    ) -> TreeEntry | None:
        """The tree entry of `name` in the open directory `dir_fd`, as `st` says it is;
        `done` is what an earlier walk of this run read there."""
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return self._dir(dir_fd, path, name, st)
        if stat.S_ISREG(mode):
            return self._file(dir_fd, path, name, st, cached, ahead, done)
        if stat.S_ISLNK(mode):
            try:
                target = localfs.read_link(dir_fd, name)
            except OSError as exc:
                self.skip(path, exc)
                return None
            self.stats.symlinks += 1
            return TreeEntry(name, EntryType.SYMLINK, 0o777, st.st_mtime_ns, target=target)
        kind = _SPECIAL.get(stat.S_IFMT(mode), "special file")
        log.info("skipping %s %s", kind, os.fsdecode(path))
        self.stats.skipped.append(Skipped(os.fsdecode(path), kind, special=True))
        return None

    def _dir(self, dir_fd: int, path: bytes, name: bytes, st: os.stat_result) -> TreeEntry | None:
        # Opened by descriptor, never through a symlink: a directory swapped for a
        # symlink after its lstat is skipped, not followed out of the backed-up tree.
        try:
            fd = localfs.open_child_dir(dir_fd, name, None)
        except localfs.NotADir:
            self.skip(path, OSError(errno.ENOTDIR, "it stopped being a directory while read"))
            return None
        except OSError as exc:
            self.skip(path, exc)
            return None
        try:
            try:
                names = localfs.children(fd)
            except OSError as exc:
                self.skip(path, exc)
                return None
            cache = self.cached_in(path)
            done = self.done_in(path)
            found = [(n, f) for n in names if (f := self._lstat(fd, path, n)) is not None]
            small = [
                (n, st.st_size)
                for n, (p, st) in found
                if stat.S_ISREG(st.st_mode)
                and st.st_size <= SMALL_FILE
                and self._must_read(st, cache.get(n), done.get(n))
            ]
            ahead = _ReadAhead(self.readers, self.repo, fd, small)
            try:
                entries = [
                    e
                    for n, (p, st) in found
                    if (e := self.entry(fd, p, n, st, cache.get(n), ahead, done.get(n))) is not None
                ]
            finally:
                ahead.close()  # before the descriptor it reads through is closed
        finally:
            os.close(fd)
        self.stats.dirs += 1
        subtree = self.repo.save_tree(entries)
        return TreeEntry(name, EntryType.DIR, st.st_mode, st.st_mtime_ns, subtree=subtree)

    def _must_read(
        self, st: os.stat_result, cached: CachedStat | None, fresh: CachedStat | None
    ) -> bool:
        """Neither read by an earlier walk of this run nor cached, as _file decides."""
        if fresh is not None and unchanged(fresh, st):
            return False
        return cached is None or not unchanged(cached, st)

    def _file(
        self,
        dir_fd: int,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        cached: CachedStat | None,
        ahead: _ReadAhead | None = None,
        fresh: CachedStat | None = None,
    ) -> TreeEntry | None:
        if fresh is not None and unchanged(fresh, st):
            content = fresh  # read by an earlier walk of this run
        elif cached is not None and unchanged(cached, st):
            # A sound row (its MAC verified): reuse without reading. run_backup asks the
            # server about every reused chunk before it commits.
            content = cached
            self.reused[path] = cached.chunks
        else:
            try:
                content = self._read(dir_fd, path, name, st, ahead)
            except OSError as exc:
                self.skip(path, exc)
                return None
        size = content.size
        self.stats.files += 1
        self.stats.bytes += size
        self.progress.add(files=1, nbytes=size)
        return TreeEntry(
            name,
            EntryType.FILE,
            st.st_mode,
            st.st_mtime_ns,
            size,
            content.chunks,
            chunk_sizes=content.chunk_sizes,
        )

    def _read(
        self,
        dir_fd: int,
        path: bytes,
        name: bytes,
        st: os.stat_result,
        ahead: _ReadAhead | None = None,
    ) -> CachedStat:
        """Chunk and queue a file's content. Returns what was read as a stat-cache row:
        the stat the file had before, the bytes read as its size, chunks and their sizes.
        The row is cached only if the file did not change while it was read."""
        small = ahead.take(name) if ahead is not None else None
        if small is not None:  # one chunk (or none), read and hashed by a reader thread
            data, after, bid = small
            chunks: tuple[BlobId, ...] = (self.repo.save(BlobKind.DATA, data, bid),) if data else ()
            sizes: tuple[int, ...] = (len(data),) if data else ()
        else:
            with localfs.open_file(dir_fd, name) as f:
                # read(), not mmap: a file truncated while we read it cannot crash the
                # process with SIGBUS.
                chunks, sizes = self.repo.save_data(self.chunker.file_chunks(f, st.st_size))
                after = os.fstat(f.fileno())
        size = sum(sizes)
        self.stats.files_read += 1
        self.stats.bytes_read += size
        read = CachedStat(st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns, chunks, sizes)
        if stat_key(st) == stat_key(after) and size == after.st_size:
            self.staged.append((path, read))
            if len(self.staged) >= STAGE_BATCH:
                self.flush()
        else:
            self.warn(f"{os.fsdecode(path)} changed while it was read; backed up as read")
        return read


_Small = tuple[bytes, os.stat_result, BlobId]  # content, fstat after the read, chunk ID


class _ReadAhead:
    """The small files of one open directory, read and hashed on the reader threads in
    the walk's order, at most READ_AHEAD files and READ_AHEAD_BYTES ahead of it.

    close() waits for the reads in flight: the directory's descriptor must outlive them
    (a number reused by another open would be read as this directory)."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        repo: Repository,
        dir_fd: int,
        files: list[tuple[bytes, int]],  # (name, size by lstat), in walk order
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._dir_fd = dir_fd
        self._todo = deque(files)
        self._reads: dict[bytes, tuple[Future[_Small | None], int]] = {}
        self._bytes = 0
        self._fill()

    def take(self, name: bytes) -> _Small | None:
        """What the reader read of `name`; None if it was not read ahead or grew past
        SMALL_FILE (the walk reads it itself). Raises the read's OSError."""
        read = self._reads.pop(name, None)
        if read is None:
            return None
        self._bytes -= read[1]
        self._fill()
        return read[0].result()

    def close(self) -> None:
        self._todo.clear()
        for read, _ in self._reads.values():
            read.cancel()
        wait([read for read, _ in self._reads.values()])
        self._reads.clear()

    def _fill(self) -> None:
        while self._todo and len(self._reads) < READ_AHEAD and self._bytes < READ_AHEAD_BYTES:
            name, size = self._todo.popleft()
            read = self._pool.submit(_read_small, self._repo, self._dir_fd, name)
            self._reads[name] = (read, size)
            self._bytes += size


def _read_small(repo: Repository, dir_fd: int, name: bytes) -> _Small | None:
    with localfs.open_file(dir_fd, name) as f:
        data = f.read(SMALL_FILE + 1)
        after = os.fstat(f.fileno())
    if len(data) > SMALL_FILE:
        return None
    return data, after, repo.blob_id(data)
