"""The one module that writes, moves, removes and walks local files for the client.

Every path is resolved component by component from a directory descriptor with
O_NOFOLLOW, so a symlink inside a folder (put there by the user or by a hostile tree) can
never redirect a read, write or delete outside it. Before a file is replaced, moved or
removed, its current stat is compared with the stat the caller expects; a mismatch means
someone changed it meanwhile, and nothing is touched (`ChangedMeanwhile`).

Writes are atomic: a temp file named `TEMP_PREFIX` + random hex in the same directory,
fsync, rename over the target, fsync of the directory (`write_file`). A restore writes
thousands of files, so it uses the parts: `write_temp` without fsync, one
`sync_filesystem` for a batch, then `commit_temp` for each. A process killed mid-write
leaves at most temp files, which `remove_temps` / `remove_temps_in` delete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, NamedTuple, cast

from anysync import faults
from anysync.errors import IntegrityError

TEMP_PREFIX = b".anysync-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class StatKey(NamedTuple):
    """How a file looked: any write, rename or chmod changes at least one field."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def stat_key(st: os.stat_result) -> StatKey:
    return StatKey(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def is_temp(name: bytes) -> bool:
    return name.startswith(TEMP_PREFIX)


def temp_name() -> bytes:
    """Fixed length, never derived from the target's name (which may be at NAME_MAX)."""
    return TEMP_PREFIX + secrets.token_hex(8).encode()


class ChangedMeanwhile(Exception):
    """The path no longer looks as the caller expected."""


class NotADir(Exception):
    """An entry where a directory goes is something else (a symlink, say)."""


class NotEmpty(Exception):
    """A directory to remove still holds entries (files that do not sync, say)."""


def open_root(path: os.PathLike[str] | str) -> int:
    """A descriptor of a folder's root (the root itself may be a symlink: the user's choice)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def parent_dir(root_fd: int, path: bytes, create: bool) -> Iterator[tuple[int, bytes]]:
    """(descriptor of the parent directory, last component) of a relative path."""
    parts = path.split(b"/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                new_fd = open_child_dir(fd, part, 0o755 if create else None)
            except NotADir:
                raise IntegrityError(
                    f"refusing to go below {os.fsdecode(part)}: not a directory (symlink?)"
                ) from None
            os.close(fd)
            fd = new_fd
        yield fd, parts[-1]
    finally:
        os.close(fd)


def current(dir_fd: int, name: bytes) -> StatKey | None:
    try:
        return stat_key(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except FileNotFoundError:
        return None


def current_at(root_fd: int, path: bytes) -> StatKey | None:
    """The stat key of the entry at a relative path (not followed), None if absent."""
    st = lstat(root_fd, path)
    return None if st is None else stat_key(st)


def lstat(root_fd: int, path: bytes) -> os.stat_result | None:
    """The entry at `path` itself (a symlink is not followed), or None if absent."""
    try:
        with parent_dir(root_fd, path, create=False) as (dir_fd, name):
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _check(dir_fd: int, name: bytes, expected: StatKey | None) -> None:
    if current(dir_fd, name) != expected:
        raise ChangedMeanwhile(os.fsdecode(name))


def write_file(
    root_fd: int,
    path: bytes,
    chunks: Iterable[bytes],
    size: int,
    mode: int,
    mtime_ns: int,
    expected: StatKey | None,
    partial_fault: str = "",
) -> StatKey:
    """Temp file, fsync, rename over the old file if it still looks as expected, fsync
    of the directory. `partial_fault` names a fault point reached after each chunk."""
    with parent_dir(root_fd, path, create=True) as (dir_fd, name):
        tmp = write_temp(dir_fd, chunks, size, mode, mtime_ns, os.fsdecode(path), partial_fault)
        commit_temp(dir_fd, tmp, name, expected)
        os.fsync(dir_fd)
        return stat_key(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def write_temp(
    dir_fd: int,
    chunks: Iterable[bytes],
    size: int,
    mode: int,
    mtime_ns: int,
    shown: str,
    partial_fault: str = "",
    fsync: bool = True,
) -> bytes:
    """A new temp file in `dir_fd` holding exactly `size` bytes of `chunks`, with its
    mode and mtime; returns its name. Without `fsync`, the caller must make it durable
    (`sync_filesystem`) before `commit_temp`, or a power cut can leave the final name
    pointing at an empty or partial file. On any error the temp file is removed."""
    tmp = temp_name()
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        written = 0
        for data in chunks:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            written += len(data)
            if partial_fault:
                faults.point(partial_fault)
        if written != size:
            raise IntegrityError(f"content of {shown} has {written} bytes, not {size}")
        os.fchmod(fd, mode & 0o7777)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    return tmp


def commit_temp(dir_fd: int, tmp: bytes, name: bytes, expected: StatKey | None) -> None:
    """Rename a finished temp file over `name` if that still looks as expected; else
    (or on any error) the temp file is removed. The directory is not fsynced."""
    try:
        _check(dir_fd, name, expected)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def sync_filesystem(fd: int) -> None:
    """Write every dirty page and inode of the filesystem holding `fd` to disk: one
    journal commit for thousands of files, where an fsync each costs one per file.
    Linux's syncfs(2); elsewhere sync(2), which also covers that filesystem."""
    if _syncfs is None:
        os.sync()
        return
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


_syncfs = _load_syncfs()


def write_symlink(
    root_fd: int,
    path: bytes,
    target: bytes,
    mtime_ns: int,
    expected: StatKey | None,
    fsync_dir: bool = True,
) -> StatKey:
    with parent_dir(root_fd, path, create=True) as (dir_fd, name):
        tmp = temp_name()
        os.symlink(target, tmp, dir_fd=dir_fd)
        try:
            os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        commit_temp(dir_fd, tmp, name, expected)
        if fsync_dir:
            os.fsync(dir_fd)
        return stat_key(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def make_dir(root_fd: int, path: bytes, mode: int) -> StatKey:
    """A directory at `path` (made if absent); an entry of another type raises."""
    with parent_dir(root_fd, path, create=True) as (dir_fd, name):
        try:
            fd = open_child_dir(dir_fd, name, 0o755)
        except NotADir:
            raise ChangedMeanwhile(os.fsdecode(name)) from None
        try:
            os.fchmod(fd, (mode & 0o7777) | 0o700)  # keep it writable for us
            return stat_key(os.fstat(fd))
        finally:
            os.close(fd)


def move(
    root_fd: int, src: bytes, dst: bytes, src_expected: StatKey, dst_expected: StatKey | None
) -> StatKey:
    """Rename a local file whose content is wanted elsewhere: no download needed."""
    with parent_dir(root_fd, src, create=False) as (sdir, sname):
        _check(sdir, sname, src_expected)
        with parent_dir(root_fd, dst, create=True) as (ddir, dname):
            _check(ddir, dname, dst_expected)
            os.rename(sname, dname, src_dir_fd=sdir, dst_dir_fd=ddir)
            os.fsync(ddir)
            if sdir != ddir:
                os.fsync(sdir)
            return stat_key(os.stat(dname, dir_fd=ddir, follow_symlinks=False))


def remove(root_fd: int, path: bytes, expected: StatKey | None, is_dir: bool) -> None:
    """Unlink a file or symlink that still looks as expected; rmdir an empty directory."""
    with parent_dir(root_fd, path, create=False) as (dir_fd, name):
        if is_dir:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise ChangedMeanwhile(os.fsdecode(name))
            try:
                os.rmdir(name, dir_fd=dir_fd)  # only if empty: unsynced files keep it
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise NotEmpty(os.fsdecode(path)) from None
                raise
        else:
            _check(dir_fd, name, expected)
            os.unlink(name, dir_fd=dir_fd)
        os.fsync(dir_fd)


class WalkItem(NamedTuple):
    rel: bytes  # relative to where the walk started
    st: os.stat_result


def open_dir(root_fd: int, path: bytes) -> int:
    """A descriptor of the directory at `path` (b"" is the root); a symlink raises."""
    if not path:
        return os.dup(root_fd)
    with parent_dir(root_fd, path, create=False) as (dir_fd, name):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise IntegrityError(f"{os.fsdecode(path)} is not a directory") from None
            raise


def children(dir_fd: int) -> list[bytes]:
    """The names in a directory, sorted by their bytes (the order trees use)."""
    return sorted(os.fsencode(n) for n in os.listdir(dir_fd))


def lstat_in(dir_fd: int, name: bytes) -> os.stat_result:
    """The entry `name` in a directory itself (a symlink is not followed)."""
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


def read_link(dir_fd: int, name: bytes) -> bytes:
    return os.readlink(name, dir_fd=dir_fd)


@contextlib.contextmanager
def open_file(dir_fd: int, name: bytes) -> Iterator[BinaryIO]:
    """A regular file in a directory, for reading; a symlink put in its place raises
    (ELOOP), and a device or FIFO never becomes the controlling terminal."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb", buffering=0) as f:
        yield f


def walk(root_fd: int, start: bytes = b"") -> Iterator[WalkItem]:
    """Every entry under the directory `start` (children before their directory), by
    lstat; never descends through a symlink; unreadable directories are skipped."""
    try:
        fd = open_dir(root_fd, start)
    except (OSError, IntegrityError):
        return
    try:
        yield from _walk_fd(fd, start)
    finally:
        os.close(fd)


def _walk_fd(fd: int, prefix: bytes) -> Iterator[WalkItem]:
    try:
        names = children(fd)
    except OSError:
        return
    for child in names:
        try:
            st = lstat_in(fd, child)
        except OSError:
            continue
        rel = prefix + b"/" + child if prefix else child
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = open_child_dir(fd, child, None)
            except (OSError, NotADir):
                sub = -1
            if sub >= 0:
                try:
                    yield from _walk_fd(sub, rel)
                finally:
                    os.close(sub)
        yield WalkItem(rel, st)


def remove_temps(root_fd: int, keep: Callable[[bytes], bool] = lambda _: False) -> int:
    """Delete every leftover temp file under the root (a killed write's); returns how many."""
    removed = 0
    for item in walk(root_fd):
        name = item.rel.rpartition(b"/")[2]
        if is_temp(name) and not stat.S_ISDIR(item.st.st_mode) and not keep(item.rel):
            with (
                contextlib.suppress(FileNotFoundError),
                parent_dir(root_fd, item.rel, create=False) as (dir_fd, leaf),
            ):
                os.unlink(leaf, dir_fd=dir_fd)
                removed += 1
    return removed


def open_child_dir(dir_fd: int, name: bytes, create_mode: int | None) -> int:
    """A descriptor of the directory `name` inside `dir_fd`, made with `create_mode` if
    absent (None: never made); never opened through a symlink (an entry of another type
    raises NotADir). Every descent below a root goes through here."""
    if create_mode is not None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, create_mode, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADir(os.fsdecode(name)) from None
        raise


def remove_temps_in(dir_fd: int) -> int:
    """Delete the leftover temp files (a killed write's) directly inside one directory;
    an unlink never follows a symlink, and a directory is never touched. Best effort:
    an entry that cannot be read or removed is left; returns how many were removed."""
    try:
        names = [os.fsencode(n) for n in os.listdir(dir_fd)]
    except OSError:
        return 0
    removed = 0
    for name in filter(is_temp, names):
        with contextlib.suppress(OSError):
            if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
    return removed
