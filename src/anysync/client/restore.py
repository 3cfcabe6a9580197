"""Restore a snapshot, or a sub-path of it, into a target directory.

Everything coming out of the repository is hostile input: names are checked when trees
are decoded, every file is written relative to an open directory descriptor, no path
component is ever followed through a symlink (O_NOFOLLOW), and a file appears under its
final name only once it is complete and on disk. A blob that fails authentication, or
that the server lost, fails the files that use it, by name (a lost directory listing
fails that directory); everything else is restored.

How files reach the disk, and why. The main thread walks the trees and fetches the
content of small files in batches (`repo.load_many`, BATCH_BYTES / BATCH_FILES); one
writer thread writes a batch while the next one downloads, so at most two batches are
in memory. A batch is written as temp files without fsync, then the filesystem is
synced once (`syncfs`), then every temp file is renamed to its final name. After a
power cut a final name therefore holds the complete file or nothing new: the data was
durable before the rename that exposes it. An fsync per file, as before, forced a
journal commit per file and made a 100,000-file restore several times slower than
restic (which does not sync at all, and writes in place under the final name). A file
larger than a batch is streamed into its temp file (`repo.stream` prefetches the next
window while this one is written) and then handed to the writer like a batch of one.
The renames themselves are made durable by one more sync at the end, instead of a
directory fsync per directory. A restore killed at any point leaves complete files
under final names and `.anysync-tmp-*` files beside them; the next restore removes the
temp files in every directory it writes into.

What is already at the target is never replaced by surprise (`Overwrite`): by default
a file or symlink that exists and differs from the snapshot's is kept and reported, one
that looks the same (size and mtime, or the link target) is left as it is, so running
an interrupted restore again only writes what is missing.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from anysync import faults
from anysync.client import localfs
from anysync.client.progress import Reporter
from anysync.client.repo.history import Snapshot
from anysync.client.repo.repository import Repository, chunks_of
from anysync.client.repo.tree import EntryType, TreeEntry, check_name, trail
from anysync.errors import AnySyncError, DiskFull, IntegrityError, NotFound, UsageError
from anysync.types import BlobId, BlobKind

# Small files are fetched together; a batch holds at most this much content. Two
# batches are in memory at once (one written, the next fetched); a larger file is
# streamed instead.
BATCH_BYTES = 16 * 1024 * 1024
# One filesystem sync per batch: at 256 files it costs little beside their writing.
BATCH_FILES = 256


class Overwrite(enum.Enum):
    """What to do with a file or symlink that already exists at the target (restic's
    choices). An entry that looks the same as the snapshot's is never rewritten, except
    by ALWAYS."""

    NEVER = "never"  # keep an existing entry that differs, and report it
    IF_CHANGED = "if-changed"  # replace an existing entry that differs
    ALWAYS = "always"  # write every entry, even one that looks the same


class Existing(enum.Enum):
    ABSENT = "absent"
    SAME = "same"
    DIFFERENT = "different"


def compare_existing(st: os.stat_result | None, entry: TreeEntry, link: bytes | None) -> Existing:
    """How the entry at the target (`st`, not followed; `link` its target if a symlink)
    compares with the snapshot's `entry`. Size and mtime decide for files, as for
    restic and rsync: a restore sets both, so a finished file looks the same."""
    if st is None:
        return Existing.ABSENT
    if entry.type is EntryType.SYMLINK:
        same = stat.S_ISLNK(st.st_mode) and link == entry.target
    else:
        same = (
            stat.S_ISREG(st.st_mode)
            and st.st_size == entry.size
            and st.st_mtime_ns == entry.mtime_ns
        )
    return Existing.SAME if same else Existing.DIFFERENT


def should_write(mode: Overwrite, existing: Existing) -> bool:
    if existing is Existing.ABSENT or mode is Overwrite.ALWAYS:
        return True
    return existing is Existing.DIFFERENT and mode is Overwrite.IF_CHANGED


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unchanged: int = 0  # files and symlinks already at the target as in the snapshot
    kept: list[str] = field(default_factory=list)  # existing and different, not replaced


class _PendingFile(NamedTuple):
    dir_fd: int  # owned: closed once the file is renamed or has failed
    name: bytes
    entry: TreeEntry
    path: str  # for messages, relative to the target
    before: localfs.StatKey | None  # what its name held when it was decided (None: nothing)


# A file written under a temp name: (the file, the temp name, the stat of what its
# final name held before, which must still be there at the rename).
_Written = tuple[_PendingFile, bytes, localfs.StatKey | None]


def run_restore(
    repo: Repository,
    snap: Snapshot,
    target: Path,
    includes: list[str],
    progress: Reporter,
    overwrite: Overwrite,
) -> RestoreStats:
    """Restore `snap` (only the paths `includes`, if any) into `target`."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        root_fd = localfs.open_root(target)
        probe = f".anysync-probe-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=root_fd))
        os.unlink(probe, dir_fd=root_fd)
    except OSError as exc:
        raise _os_error(exc, f"cannot write to the target directory {target}") from None
    r = _Restorer(repo, progress, overwrite)
    try:
        try:
            entries = repo.load_tree(snap.commit.tree)
        except NotFound as exc:
            # Lost on the server (a hostile tree, IntegrityError, stays fatal): no file
            # below it can be named, so the whole snapshot is the failed path.
            r.stats.failed.append(("(every file of the snapshot)", exc.message))
        else:
            # Every include is looked up before anything is written: a typo in the
            # third one must not leave the first two restored and the user guessing.
            selections = [_select(repo, entries, inc) for inc in outermost(includes)] or [
                (entries, [])
            ]
            for i, (selected, leading) in enumerate(selections):
                # Directory modes last of all: a read-only directory shared by two
                # includes must not be made read-only before the second is written.
                r.restore_into(root_fd, leading, selected, last=i == len(selections) - 1)
    finally:
        r.close()
        os.close(root_fd)
    progress.done()
    return r.stats


def outermost(includes: list[str]) -> list[str]:
    """The include paths without those inside another one (a/b beside a: a holds it)."""
    parts = sorted({tuple(p for p in inc.split("/") if p) for inc in includes})
    kept: list[tuple[str, ...]] = []
    for p in parts:
        if not any(p[: len(k)] == k for k in kept):
            kept.append(p)
    return ["/".join(p) for p in kept]


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
    def __init__(
        self, repo: Repository, progress: Reporter, overwrite: Overwrite = Overwrite.ALWAYS
    ) -> None:
        self.repo = repo
        self.progress = progress
        self.overwrite = overwrite
        self.stats = RestoreStats()  # failures are appended by both threads
        self._sync_fd = -1  # the target's, during restore_into
        self._pending: list[_PendingFile] = []
        self._pending_bytes = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-writer")
        self._writing: Future[None] | None = None
        # Directory modes and mtimes are applied last, deepest first, so that writing
        # children neither fails (read-only directories) nor bumps the mtime.
        self._dir_meta: list[tuple[list[bytes], TreeEntry]] = []

    def close(self) -> None:
        """Let the writer finish what it holds (its errors were raised, or the restore
        is failing already), then release the descriptors of unwritten files."""
        self._writer.shutdown(wait=True)
        for p in self._pending:
            os.close(p.dir_fd)
        self._pending.clear()

    def restore_into(
        self, root_fd: int, leading: list[TreeEntry], entries: list[TreeEntry], last: bool = True
    ) -> None:
        """Restore `entries` below the directories `leading`; with `last`, then make it
        all durable and give the directories their recorded modes and times."""
        self._sync_fd = root_fd
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
            self._wait_for_writer()
        finally:
            os.close(fd)
        if not last:
            return
        self._sync()  # the renames (directory entries) of the last batches
        once = {tuple(rel): (rel, entry) for rel, entry in self._dir_meta}  # includes share
        for rel, entry in sorted(once.values(), key=lambda m: -len(m[0])):
            self._apply_dir_meta(root_fd, rel, entry)

    def _restore_entries(self, dir_fd: int, path: list[bytes], entries: list[TreeEntry]) -> None:
        # A killed restore's temp files would otherwise stay beside the finished files.
        localfs.remove_temps_in(dir_fd)
        for entry in entries:
            check_name(entry.name)
            rel = [*path, entry.name]
            shown = os.fsdecode(b"/".join(rel))
            with self._per_file(shown):
                if entry.type is EntryType.DIR:
                    self._restore_dir(dir_fd, rel, entry, shown)
                    continue
                write, before = self._wanted(dir_fd, entry, shown)
                if not write:
                    continue
                if entry.type is EntryType.SYMLINK:
                    self._restore_symlink(dir_fd, entry, before)
                else:
                    self._queue_file(dir_fd, entry, shown, before)

    @contextlib.contextmanager
    def _per_file(self, shown: str) -> Iterator[None]:
        """A failure here fails this path only; a full disk ends the restore."""
        try:
            yield
        except (IntegrityError, NotFound) as exc:
            self.stats.failed.append((shown, exc.message))
        except localfs.ChangedMeanwhile:
            self.stats.failed.append((shown, _CHANGED))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _os_error(exc, f"cannot restore {shown}") from None
            self.stats.failed.append((shown, exc.strerror or str(exc)))

    def _wanted(
        self, dir_fd: int, entry: TreeEntry, shown: str
    ) -> tuple[bool, localfs.StatKey | None]:
        """Whether to write this file or symlink over what the target holds now, and the
        stat of what it holds: the rename happens only if that is still there (a file
        made meanwhile is never replaced)."""
        try:
            st: os.stat_result | None = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        link = os.readlink(entry.name, dir_fd=dir_fd) if st and stat.S_ISLNK(st.st_mode) else None
        existing = compare_existing(st, entry, link)
        if should_write(self.overwrite, existing):
            return True, None if st is None else localfs.stat_key(st)
        if existing is Existing.SAME:
            self.stats.unchanged += 1
            self.progress.add(files=1, nbytes=entry.size)
        else:
            self.stats.kept.append(shown)
        return False, None

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

    def _restore_symlink(
        self, dir_fd: int, entry: TreeEntry, before: localfs.StatKey | None
    ) -> None:
        # Replaces what `_wanted` saw there, nothing that came after. Never partial.
        localfs.write_symlink(
            dir_fd, entry.name, entry.target, entry.mtime_ns, before, fsync_dir=False
        )
        self.stats.symlinks += 1

    def _queue_file(
        self, dir_fd: int, entry: TreeEntry, shown: str, before: localfs.StatKey | None
    ) -> None:
        # The pending file holds its own descriptor of the directory, which may be
        # finished (and its descriptor closed) before the file is written.
        p = _PendingFile(os.dup(dir_fd), entry.name, entry, shown, before)
        if entry.size > BATCH_BYTES:
            self._stream_file(p)
            return
        self._pending.append(p)
        self._pending_bytes += entry.size
        if self._pending_bytes >= BATCH_BYTES or len(self._pending) >= BATCH_FILES:
            self._flush()

    def _stream_file(self, p: _PendingFile) -> None:
        """A large file, written here while its next window downloads; the writer
        syncs and renames it."""
        try:
            tmp = self._write_temp(p, self.repo.stream(p.entry.chunks, p.entry.size))
        except BaseException:
            os.close(p.dir_fd)
            raise
        self._hand_over(self._commit_streamed, (p, tmp, p.before))

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        try:
            wanted = [c for p in pending for c in p.entry.chunks]
            blobs = self.repo.load_many(BlobKind.DATA, wanted)
        except BaseException:
            for p in pending:
                os.close(p.dir_fd)
            raise
        self._hand_over(self._write_batch, pending, blobs)

    def _hand_over(self, fn: Callable[..., None], *args: Any) -> None:
        """Give the writer its next task once it is done with the previous one: the
        batch just fetched waits, the one after it is not fetched meanwhile."""
        self._wait_for_writer()
        self._writing = self._writer.submit(fn, *args)

    def _wait_for_writer(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    # ------------------------------------------------------------ the writer thread

    def _write_batch(
        self, pending: list[_PendingFile], blobs: dict[BlobId, bytes | IntegrityError | NotFound]
    ) -> None:
        written: list[_Written] = []
        try:
            for p in pending:
                with self._per_file(p.path):
                    # Replaces what `_wanted` saw there (see _restore_symlink).
                    written.append(
                        (p, self._write_temp(p, chunks_of(blobs, p.entry.chunks)), p.before)
                    )
            self._commit(written)
        except BaseException:
            # A full disk (say): the temp files not renamed yet would only take space.
            # Once renamed, a temp name no longer exists.
            for p, tmp, _ in written:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=p.dir_fd)
            raise
        finally:
            for p in pending:
                os.close(p.dir_fd)

    def _commit_streamed(self, written: _Written) -> None:
        try:
            self._commit([written])
        finally:
            os.close(written[0].dir_fd)

    def _write_temp(self, p: _PendingFile, chunks: Iterator[bytes]) -> bytes:
        # The size is checked before the rename: a short stream never gets the name.
        e = p.entry
        return localfs.write_temp(
            p.dir_fd,
            chunks,
            e.size,
            e.mode,
            e.mtime_ns,
            p.path,
            "restore.file-partial",
            fsync=False,  # one sync for the whole batch, in _commit
        )

    def _commit(self, written: list[_Written]) -> None:
        """Sync once, then give every written file its name."""
        self._sync()
        for p, tmp, before in written:
            with self._per_file(p.path):
                localfs.commit_temp(p.dir_fd, tmp, p.name, before)
                faults.point("restore.file-written")
                self.stats.files += 1
                self.stats.bytes += p.entry.size
                self.progress.add(files=1, nbytes=p.entry.size)

    def _sync(self) -> None:
        try:
            localfs.sync_filesystem(self._sync_fd)
        except OSError as exc:
            raise _os_error(exc, "cannot write the restored files to disk") from None

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
