"""File operations inside a sync folder that never follow a symlink and never replace a
file that changed since it was scanned.

Every path is resolved component by component from the folder's root descriptor with
O_NOFOLLOW, so a symlink placed in the folder (or by a hostile tree) cannot redirect a
write outside it. Before a file is replaced, moved or deleted, its current stat is
compared with the stat the scan saw; a mismatch means the user changed it meanwhile, and
the operation is skipped so the next pass sees a local change instead of losing it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Iterator

from anysync.client.sync.state import StatKey, stat_key
from anysync.errors import IntegrityError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ChangedMeanwhile(Exception):
    """The path no longer looks as the scan saw it."""


@contextlib.contextmanager
def parent_dir(root_fd: int, path: bytes, create: bool) -> Iterator[tuple[int, bytes]]:
    """(descriptor of the parent directory, last component) of a relative path."""
    parts = path.split(b"/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                new_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise IntegrityError(
                        f"refusing to write below {os.fsdecode(part)}: not a directory (symlink?)"
                    ) from None
                raise
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
) -> StatKey:
    """Temp file, fsync, then rename over the old file if it is still as scanned."""
    with parent_dir(root_fd, path, create=True) as (dir_fd, name):
        tmp = f".anysync-tmp-{secrets.token_hex(8)}".encode()
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            written = 0
            with os.fdopen(fd, "wb", closefd=False) as f:
                for data in chunks:
                    f.write(data)
                    written += len(data)
            if written != size:
                raise IntegrityError(
                    f"content of {os.fsdecode(path)} has {written} bytes, not {size}"
                )
            os.fchmod(fd, mode & 0o7777)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            _check(dir_fd, name, expected)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        return stat_key(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def write_symlink(
    root_fd: int, path: bytes, target: bytes, mtime_ns: int, expected: StatKey | None
) -> StatKey:
    with parent_dir(root_fd, path, create=True) as (dir_fd, name):
        tmp = f".anysync-tmp-{secrets.token_hex(8)}".encode()
        os.symlink(target, tmp, dir_fd=dir_fd)
        try:
            os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            _check(dir_fd, name, expected)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        return stat_key(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def make_dir(root_fd: int, path: bytes, mode: int) -> StatKey:
    with parent_dir(root_fd, path, create=True) as (dir_fd, name):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
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
            return stat_key(os.stat(dname, dir_fd=ddir, follow_symlinks=False))


def remove(root_fd: int, path: bytes, expected: StatKey, is_dir: bool) -> None:
    with parent_dir(root_fd, path, create=False) as (dir_fd, name):
        if is_dir:
            os.rmdir(name, dir_fd=dir_fd)  # only if empty: ignored files keep it
            return
        _check(dir_fd, name, expected)
        os.unlink(name, dir_fd=dir_fd)
