"""Restore a snapshot, or a sub-path of it, into a target directory.

Everything coming out of the repository is hostile input: names are checked when trees
are decoded, every file is written relative to an open directory descriptor, no path
component is ever followed through a symlink (O_NOFOLLOW), and a file appears under its
final name only once it is complete (temp file, fsync, rename; all through `localfs`).
A restore killed mid-file leaves a temp file beside it; the next restore removes the
temp files in every directory it writes into. A blob that fails
authentication, or that the server lost, fails the files that use it, by name (a lost
directory listing fails that directory); everything else is restored.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from anysync import faults
from anysync.client import localfs
from anysync.client.progress import Reporter
from anysync.client.repo.history import Snapshot
from anysync.client.repo.repository import Repository, chunks_of
from anysync.client.repo.tree import EntryType, TreeEntry, check_name, trail
from anysync.errors import AnySyncError, DiskFull, IntegrityError, NotFound, UsageError
from anysync.types import BlobKind

# Small files are fetched together; a batch holds at most this much content.
BATCH_BYTES = 32 * 1024 * 1024
BATCH_FILES = 256


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class _PendingFile:
    dir_fd: int
    name: bytes
    entry: TreeEntry
    path: str  # for messages, relative to the target


def run_restore(
    repo: Repository, snap: Snapshot, target: Path, include: str | None, progress: Reporter
) -> RestoreStats:
    try:
        target.mkdir(parents=True, exist_ok=True)
        root_fd = localfs.open_root(target)
        probe = f".anysync-probe-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=root_fd))
        os.unlink(probe, dir_fd=root_fd)
    except OSError as exc:
        raise _os_error(exc, f"cannot write to the target directory {target}") from None
    r = _Restorer(repo, progress)
    try:
        try:
            entries = repo.load_tree(snap.commit.tree)
        except NotFound as exc:
            # Lost on the server (a hostile tree, IntegrityError, stays fatal): no file
            # below it can be named, so the whole snapshot is the failed path.
            r.stats.failed.append(("(every file of the snapshot)", exc.message))
        else:
            prefix: list[TreeEntry] = []
            if include:
                entries, prefix = _select(repo, entries, include)
            r.restore_into(root_fd, prefix, entries)
    finally:
        r.close()
        os.close(root_fd)
    progress.done()
    return r.stats


def _select(
    repo: Repository, entries: list[TreeEntry], include: str
) -> tuple[list[TreeEntry], list[TreeEntry]]:
    """Find `include` in the tree: (entries to restore, the directories leading to them)."""
    parts = [os.fsencode(p) for p in include.strip("/").split("/") if p]
    if not parts:
        return entries, []
    found = trail(repo, entries, parts)
    if len(found) == len(parts):
        return found[-1:], found[:-1]
    if found and found[-1].subtree is None:  # a file, a symlink (or a broken directory)
        raise NotFound(
            f"{include} is not in this snapshot ({found[-1].display_name} is not a directory)"
        )
    raise NotFound(f"{include} is not in this snapshot; see `anysync ls`")


class _Restorer:
    def __init__(self, repo: Repository, progress: Reporter) -> None:
        self.repo = repo
        self.progress = progress
        self.stats = RestoreStats()
        self._pending: list[_PendingFile] = []
        self._pending_bytes = 0
        # Directory modes and mtimes are applied last, deepest first, so that writing
        # children neither fails (read-only directories) nor bumps the mtime.
        self._dir_meta: list[tuple[list[bytes], TreeEntry]] = []

    def close(self) -> None:
        for p in self._pending:
            os.close(p.dir_fd)
        self._pending.clear()

    def restore_into(
        self, root_fd: int, leading: list[TreeEntry], entries: list[TreeEntry]
    ) -> None:
        fd = os.dup(root_fd)
        path: list[bytes] = []
        try:
            for d in leading:
                path.append(d.name)
                new_fd = self._open_dir(
                    fd, d.name, "/".join(p.decode(errors="replace") for p in path)
                )
                os.close(fd)
                fd = new_fd
                self._dir_meta.append((list(path), d))
            self._restore_entries(fd, path, entries)
            self._flush()
        finally:
            os.close(fd)
        for rel, entry in sorted(self._dir_meta, key=lambda m: -len(m[0])):
            self._apply_dir_meta(root_fd, rel, entry)

    def _restore_entries(self, dir_fd: int, path: list[bytes], entries: list[TreeEntry]) -> None:
        # A killed restore's temp files would otherwise stay beside the finished files.
        localfs.remove_temps_in(dir_fd)
        for entry in entries:
            check_name(entry.name)
            rel = [*path, entry.name]
            shown = os.fsdecode(b"/".join(rel))
            try:
                if entry.type is EntryType.DIR:
                    self._restore_dir(dir_fd, rel, entry, shown)
                elif entry.type is EntryType.SYMLINK:
                    self._restore_symlink(dir_fd, entry)
                else:
                    self._queue_file(dir_fd, entry, shown)
            except (IntegrityError, NotFound) as exc:
                self.stats.failed.append((shown, exc.message))
            except localfs.ChangedMeanwhile:
                self.stats.failed.append((shown, _CHANGED))
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise _os_error(exc, f"cannot restore {shown}") from None
                self.stats.failed.append((shown, exc.strerror or str(exc)))

    def _open_dir(self, dir_fd: int, name: bytes, shown: str) -> int:
        try:
            # 0o700 until the recorded mode is applied, after every child is written.
            return localfs.open_child_dir(dir_fd, name, 0o700)
        except localfs.NotADir:
            raise IntegrityError(
                f"refusing to restore into {shown}: it exists and is not a directory "
                "(never writing through a symlink)"
            ) from None

    def _restore_dir(self, dir_fd: int, rel: list[bytes], entry: TreeEntry, shown: str) -> None:
        assert entry.subtree is not None
        children = self.repo.load_tree(entry.subtree)
        fd = self._open_dir(dir_fd, entry.name, shown)
        try:
            self._dir_meta.append((rel, entry))
            self.stats.dirs += 1
            self._restore_entries(fd, rel, children)
        finally:
            os.close(fd)

    def _restore_symlink(self, dir_fd: int, entry: TreeEntry) -> None:
        # Replaces whatever is there: the stat taken now only guards against a change
        # made while the symlink is being written.
        before = localfs.current(dir_fd, entry.name)
        localfs.write_symlink(
            dir_fd, entry.name, entry.target, entry.mtime_ns, before, fsync_dir=False
        )
        self.stats.symlinks += 1

    def _queue_file(self, dir_fd: int, entry: TreeEntry, shown: str) -> None:
        if entry.size > BATCH_BYTES:
            chunks = self.repo.stream(entry.chunks, entry.size)
            self._write_file(_PendingFile(dir_fd, entry.name, entry, shown), chunks)
            return
        # The pending file holds its own descriptor of the directory, which may be
        # finished (and its descriptor closed) before the batch is written.
        self._pending.append(_PendingFile(os.dup(dir_fd), entry.name, entry, shown))
        self._pending_bytes += entry.size
        if self._pending_bytes >= BATCH_BYTES or len(self._pending) >= BATCH_FILES:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        wanted = [c for p in pending for c in p.entry.chunks]
        blobs = self.repo.load_many(BlobKind.DATA, wanted)
        try:
            for p in pending:
                try:
                    self._write_file(p, chunks_of(blobs, p.entry.chunks))
                except (IntegrityError, NotFound) as exc:
                    self.stats.failed.append((p.path, exc.message))
                except localfs.ChangedMeanwhile:
                    self.stats.failed.append((p.path, _CHANGED))
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise _os_error(exc, f"cannot restore {p.path}") from None
                    self.stats.failed.append((p.path, exc.strerror or str(exc)))
        finally:
            for p in pending:
                os.close(p.dir_fd)

    def _write_file(self, p: _PendingFile, chunks: Iterator[bytes]) -> None:
        # Replaces whatever file is there (see _restore_symlink); the size is checked
        # before the rename, so a short stream never appears under the file's name.
        before = localfs.current(p.dir_fd, p.name)
        e = p.entry
        # No directory fsync per file (thousands of small files): a restore interrupted
        # by a power cut is simply run again; every file is fsynced before its rename.
        localfs.write_file(
            p.dir_fd,
            p.name,
            chunks,
            e.size,
            e.mode,
            e.mtime_ns,
            before,
            "restore.file-partial",
            fsync_dir=False,
        )
        faults.point("restore.file-written")
        self.stats.files += 1
        self.stats.bytes += e.size
        self.progress.add(files=1, nbytes=e.size)

    def _apply_dir_meta(self, root_fd: int, rel: list[bytes], entry: TreeEntry) -> None:
        shown = os.fsdecode(b"/".join(rel))
        try:
            fd = localfs.open_dir(root_fd, b"/".join(rel))
        except IntegrityError as exc:
            self.stats.failed.append((shown, exc.message))
            return
        except OSError as exc:
            self.stats.failed.append((shown, exc.strerror or str(exc)))
            return
        try:
            os.fchmod(fd, entry.mode & 0o7777)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        except OSError as exc:
            self.stats.failed.append((shown, exc.strerror or str(exc)))
        finally:
            os.close(fd)


_CHANGED = "changed on disk while being restored; run the restore again"


def _os_error(exc: OSError, context: str) -> AnySyncError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"{context}: no space left on the device; free some space and run the restore "
            "again (files already restored are complete)"
        )
    return UsageError(f"{context}: {exc.strerror or exc}")
