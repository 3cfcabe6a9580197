"""anysync mount DIR: browse every backup snapshot in a read-only directory (FUSE).

DIR holds one directory per snapshot, named by its local time and short ID
(2026-12-01T04:12:37_ab12cd34), with the backed-up paths inside, and `latest`, a link
to the newest. New backups appear within seconds. Unmount with `fusermount3 -u DIR`.

The command returns once DIR is mounted; a process of its own serves it until it is
unmounted. With --foreground it serves the mount itself instead (Ctrl-C unmounts).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from anysync.cli import common
from anysync.client import mounts
from anysync.client.forget import CountingEdits
from anysync.client.repo import history
from anysync.client.repo.refs import Snapshot
from anysync.client.repo.tree import TreeEntry
from anysync.errors import AnySyncError, UsageError
from anysync.types import BlobId, BlobKind

# How long the background start waits for the mount: unlocking, the first listing of
# the snapshots and the mount itself.
START_TIMEOUT = 120.0
ERROR_PREFIX = "anysync: error: "


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mount",
        help="browse every snapshot in a read-only directory (FUSE)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mountpoint", type=Path, help="an empty directory to mount on")
    p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C unmounts")
    # Set by the background start: the device passphrase (or an empty line) comes on
    # stdin, and once mounted the child lets go of the parent's pipes.
    p.add_argument("--background-child", action="store_true", help=argparse.SUPPRESS)
    common.add_password_option(p)
    p.set_defaults(run=run)


class MountFailed(AnySyncError):
    """The background mount process ended with an error (its message, its exit code)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run(args: argparse.Namespace) -> int:
    _require_fuse_library()
    mountpoint = _usable_mountpoint(args.mountpoint)
    if args.foreground or args.background_child:
        return _serve(args, mountpoint)
    return _start_in_background(args, mountpoint)


def _require_fuse_library() -> None:
    # pyfuse3 comes with the optional "drive" extra; the other commands run without it,
    # so it is imported only here (and snapfs only when serving).
    if importlib.util.find_spec("pyfuse3") is None or importlib.util.find_spec("trio") is None:
        raise UsageError(
            "anysync mount needs pyfuse3 and trio (the drive extra; see docs/install.md)"
        )


def _usable_mountpoint(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    if mounts.mount_type(path) is not None:
        raise UsageError(f"{path} is already a mount point (unmount: fusermount3 -u {path})")
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    return path


# ---------------------------------------------------------------- background start


def _start_in_background(args: argparse.Namespace, mountpoint: Path) -> int:
    """Start this command again in a new session with the hidden --background-child,
    write the device passphrase, if device.keys has one, to the child's stdin (never argv
    or a file), and wait until the
    mount is up; or print the child's one-line error and exit with its code. The child
    lets go of the pipes once mounted."""
    secret = common.secret_for_child(args)
    command = [sys.executable, "-m", "anysync.cli.main"]
    if args.verbose:
        command.append("-v")
    command += ["mount", str(mountpoint), "--background-child"]
    env = {k: v for k, v in os.environ.items() if k not in common.SECRET_ENV}
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # not ended by the terminal's Ctrl-C or hangup
    )
    assert child.stdin is not None and child.stderr is not None
    try:
        child.stdin.write(secret.encode("utf-8") + b"\n")
        child.stdin.close()
    except BrokenPipeError:
        pass  # it ended already; its error is on stderr
    try:
        mounted = mounts.wait_mounted(mountpoint, START_TIMEOUT, alive=lambda: child.poll() is None)
    except KeyboardInterrupt:
        _stop(child, mountpoint)
        raise
    if mounted:
        child.stderr.close()
        print(f"mounted the snapshots at {mountpoint}; unmount: fusermount3 -u {mountpoint}")
        return 0
    if child.poll() is None:  # still starting after the timeout: give up on it
        _stop(child, mountpoint)
        raise AnySyncError(
            f"the mount at {mountpoint} did not come up within {START_TIMEOUT:.0f} s"
        )
    code = child.returncode
    raise MountFailed(_last_line(child.stderr.read()), code if code > 0 else 1)


def _stop(child: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """End a child that is still starting; a signal between its mount and its signal
    handlers would leave a dead mount behind, so that is taken down too."""
    if child.poll() is None:
        os.kill(child.pid, signal.SIGTERM)
        child.wait()
    if mounts.is_anysync_mount(mountpoint):
        mounts.lazy_unmount(mountpoint)


def _last_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return "the mount process ended without saying why"
    return lines[-1].removeprefix(ERROR_PREFIX)


# ---------------------------------------------------------------- serving


class _SessionSource:
    """The snapshots and blobs of an open session, as snapfs reads them."""

    def __init__(self, s: common.Session) -> None:
        self._s = s

    def snapshots(self) -> list[Snapshot]:
        # Which edits count is asked again each time: a forget made while mounted shows.
        counting = CountingEdits(self._s.remote)
        return history.snapshots(self._s.refs, warn=common.print_warning, counting=counting)

    def load_tree(self, bid: BlobId) -> list[TreeEntry]:
        return self._s.repo.load_tree(bid)

    def load_chunks(self, ids: Sequence[BlobId]) -> Mapping[BlobId, bytes | AnySyncError]:
        return self._s.repo.load_many(BlobKind.DATA, ids)


def _serve(args: argparse.Namespace, mountpoint: Path) -> int:
    from anysync.client.drive import snapfs  # needs pyfuse3: see _require_fuse_library

    # A background child reads the passphrase its parent wrote on stdin ("" if none).
    passphrase = sys.stdin.readline().removesuffix("\n") if args.background_child else None
    with common.open_session(args, passphrase) as s:
        on_mounted = _detach if args.background_child else _say_mounted(mountpoint)
        snapfs.serve(_SessionSource(s), mountpoint, on_mounted)
    return 0


def _detach() -> None:
    """Mounted: let go of the parent's stderr pipe (it has returned) and the terminal."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _say_mounted(mountpoint: Path) -> Callable[[], None]:
    def say() -> None:
        print(
            f"mounted the snapshots at {mountpoint}; Ctrl-C or fusermount3 -u {mountpoint} "
            "unmounts",
            file=sys.stderr,
        )

    return say
