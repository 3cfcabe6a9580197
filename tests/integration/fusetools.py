"""FUSE for tests: `requires_fuse` (skip, with the precise reason, where FUSE cannot be
used), mount-table helpers, and a one-file read-only file system (`python -m
tests.integration.fusetools MOUNTPOINT`) that proves a FUSE mount works here.

In CI (tests/conftest.py) a skip fails the run: there the FUSE tests must run. A
container needs `--device /dev/fuse --cap-add SYS_ADMIN` (docs/install.md)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pyfuse3

DEV_FUSE = Path("/dev/fuse")
CAP_SYS_ADMIN = 21  # bit in /proc/self/status CapEff
PACKAGES = "apt-get install fuse3 libfuse3-dev pkg-config gcc python3-dev, then make install"
CONTAINER = "a container needs --device /dev/fuse --cap-add SYS_ADMIN"


def _has_cap_sys_admin() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def _open_dev_fuse() -> str | None:
    """None if /dev/fuse opens, else why not (one line)."""
    try:
        os.close(os.open(DEV_FUSE, os.O_RDWR))
    except OSError as e:
        return f"cannot open {DEV_FUSE}: {e.strerror} (usually mode 0666; {CONTAINER})"
    return None


def fuse_unavailable() -> str | None:
    """Why FUSE mounts cannot work here, or None when they can (as far as can be told
    without mounting)."""
    if not sys.platform.startswith("linux"):
        return f"FUSE tests run on Linux only (this is {sys.platform})"
    if not DEV_FUSE.exists():
        return (
            f"no {DEV_FUSE}: the fuse kernel module is not loaded (modprobe fuse), or {CONTAINER}"
        )
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        return f"no fusermount3 on PATH: {PACKAGES}"
    # libfuse opens /dev/fuse itself, as root or not (no fusermount3 fallback for that).
    if (why := _open_dev_fuse()) is not None:
        return why
    if os.geteuid() == 0:
        if not _has_cap_sys_admin():
            return f"running as root without CAP_SYS_ADMIN, so mount(2) fails: {CONTAINER}"
    else:
        st = os.stat(fusermount)  # a user mounts through it
        if not (st.st_mode & stat.S_ISUID and st.st_uid == 0):
            return f"{fusermount} is not setuid root, so a user cannot mount"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as e:
        return f"pyfuse3 (the drive extra) is not importable ({e}): {PACKAGES}"
    return None


_REASON = fuse_unavailable()

# Mark a test (or a module: pytestmark = requires_fuse) that mounts a FUSE file system.
requires_fuse = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


# ---------------------------------------------------------------- the mount table


def _unescape(field: str) -> str:
    """A /proc/self/mountinfo path field: space, tab, newline, backslash are octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_fstype(path: Path) -> str | None:
    """The file system type of the mount at exactly `path` (the last one), or None."""
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        after_dash = fields[fields.index("-") + 1 :]
        if _unescape(fields[4]) == str(path):
            found = after_dash[0]
    return found


def wait_for_mount(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait until a FUSE file system is mounted at `path` by `proc`; fail the test with the
    process's output if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while not (mount_fstype(path) or "").startswith("fuse"):
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"the FUSE process exited with {proc.returncode} before mounting:\n{out}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing mounted at {path} after {timeout} s")
        time.sleep(0.02)


def unmount(path: Path, lazy: bool = False) -> None:
    """fusermount3 -u (-z: lazy, detaches even while busy)."""
    subprocess.run(
        ["fusermount3", "-uz" if lazy else "-u", str(path)],
        check=True,
        capture_output=True,
        timeout=10,
    )


# ---------------------------------------------------------------- hello: one read-only file

HELLO_NAME = b"hello.txt"
HELLO_DATA = b"hello from FUSE\n"
FSNAME = "fusetools-hello"  # fstype fuse.fusetools-hello: not fuse.anysync*, which is the drive's


def _hello_ops() -> pyfuse3.Operations:
    import pyfuse3  # only where FUSE is available

    root, hello = pyfuse3.ROOT_INODE, pyfuse3.InodeT(pyfuse3.ROOT_INODE + 1)

    class Hello(pyfuse3.Operations):
        async def getattr(
            self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
        ) -> pyfuse3.EntryAttributes:
            attr = pyfuse3.EntryAttributes()
            if inode == root:
                attr.st_mode, attr.st_nlink = pyfuse3.ModeT(stat.S_IFDIR | 0o555), 2
            elif inode == hello:
                attr.st_mode, attr.st_nlink = pyfuse3.ModeT(stat.S_IFREG | 0o444), 1
                attr.st_size = len(HELLO_DATA)
            else:
                raise pyfuse3.FUSEError(errno.ENOENT)
            attr.st_ino, attr.st_uid, attr.st_gid = inode, os.getuid(), os.getgid()
            return attr

        async def lookup(
            self,
            parent_inode: pyfuse3.InodeT,
            name: pyfuse3.FileNameT,
            ctx: pyfuse3.RequestContext,
        ) -> pyfuse3.EntryAttributes:
            if parent_inode != root or name != HELLO_NAME:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return await self.getattr(hello)

        async def opendir(
            self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.FileHandleT:
            if inode != root:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            return pyfuse3.FileHandleT(root)

        async def readdir(
            self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
        ) -> None:
            if start_id == 0:
                pyfuse3.readdir_reply(
                    token, pyfuse3.FileNameT(HELLO_NAME), await self.getattr(hello), 1
                )

        async def open(
            self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.FileInfo:
            if inode != hello:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise pyfuse3.FUSEError(errno.EROFS)
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(hello))

        async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
            return HELLO_DATA[off : off + size]

    return Hello()


def serve_hello(mountpoint: Path) -> None:
    """Serve the hello file system at `mountpoint` until it is unmounted."""
    import pyfuse3
    import trio

    pyfuse3.init(_hello_ops(), str(mountpoint), {f"fsname={FSNAME}", f"subtype={FSNAME}", "ro"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)  # fusermount3 -u ended pyfuse3.main: already unmounted


if __name__ == "__main__":
    serve_hello(Path(sys.argv[1]))
