"""Restore a snapshot, or a sub-path of it, into a target directory.

Everything coming out of the repository is hostile input: names are checked when trees
are decoded, every file is written relative to an open directory descriptor, no path
component is ever followed through a symlink (O_NOFOLLOW), and a file appears under its
final name only once it is complete (temp file, fsync, rename). A blob that fails
authentication, or that the server lost, fails the files that use it, by name (a lost
directory listing fails that directory); everything else is restored.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from anysync import faults
from anysync.client.progress import Reporter
from anysync.client.repo.history import Snapshot
from anysync.client.repo.repository import Repository, chunks_of
from anysync.client.repo.tree import EntryType, TreeEntry, check_name
from anysync.errors import AnySyncError, DiskFull, IntegrityError, NotFound, UsageError
from anysync.types import BlobKind

# Small files are fetched together; a batch holds at most this much content.
BATCH_BYTES = 32 * 1024 * 1024
BATCH_FILES = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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
    leading: list[TreeEntry] = []
    for i, part in enumerate(parts):
        match = next((e for e in entries if e.name == part), None)
        if match is None:
            raise NotFound(f"{include} is not in this snapshot; see `anysync ls`")
        if i == len(parts) - 1:
            return [match], leading
        if match.type is not EntryType.DIR or match.subtree is None:
            raise NotFound(
                f"{include} is not in this snapshot ({part.decode()} is not a directory)"
            )
        leading.append(match)
        entries = repo.load_tree(match.subtree)
    raise AssertionError("unreachable")


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
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise _os_error(exc, f"cannot restore {shown}") from None
                self.stats.failed.append((shown, exc.strerror or str(exc)))

    def _open_dir(self, dir_fd: int, name: bytes, shown: str) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise IntegrityError(
                    f"refusing to restore into {shown}: it exists and is not a directory "
                    "(never writing through a symlink)"
                ) from None
            raise

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
        tmp = _temp_name()
        os.symlink(entry.target, tmp, dir_fd=dir_fd)
        try:
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            os.rename(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            _unlink_quietly(dir_fd, tmp)
            raise
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
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise _os_error(exc, f"cannot restore {p.path}") from None
                    self.stats.failed.append((p.path, exc.strerror or str(exc)))
        finally:
            for p in pending:
                os.close(p.dir_fd)

    def _write_file(self, p: _PendingFile, chunks: Iterator[bytes]) -> None:
        tmp = _temp_name()
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=p.dir_fd,
        )
        try:
            written = 0
            with os.fdopen(fd, "wb", buffering=0, closefd=False) as f:
                for data in chunks:
                    view = memoryview(data)
                    while view:
                        n = f.write(view)
                        assert n is not None
                        view = view[n:]
                    written += len(data)
                    faults.point("restore.file-partial")
            if written != p.entry.size:
                raise IntegrityError(
                    f"restored size {written} differs from the recorded {p.entry.size}"
                )
            os.fchmod(fd, p.entry.mode & 0o7777)
            os.utime(fd, ns=(p.entry.mtime_ns, p.entry.mtime_ns))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, p.name, src_dir_fd=p.dir_fd, dst_dir_fd=p.dir_fd)
            faults.point("restore.file-written")
        except BaseException:
            if fd >= 0:
                os.close(fd)
            _unlink_quietly(p.dir_fd, tmp)
            raise
        self.stats.files += 1
        self.stats.bytes += written
        self.progress.add(files=1, nbytes=written)

    def _apply_dir_meta(self, root_fd: int, rel: list[bytes], entry: TreeEntry) -> None:
        fd = os.dup(root_fd)
        try:
            for name in rel:
                new_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = new_fd
            os.fchmod(fd, entry.mode & 0o7777)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        except OSError as exc:
            self.stats.failed.append((os.fsdecode(b"/".join(rel)), exc.strerror or str(exc)))
        finally:
            os.close(fd)


def _temp_name() -> bytes:
    return f".anysync-tmp-{secrets.token_hex(8)}".encode()


def _unlink_quietly(dir_fd: int, name: bytes) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _os_error(exc: OSError, context: str) -> AnySyncError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"{context}: no space left on the device; free some space and run the restore "
            "again (files already restored are complete)"
        )
    return UsageError(f"{context}: {exc.strerror or exc}")
