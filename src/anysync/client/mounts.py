"""AnySync's own FUSE mounts, as the kernel lists them in /proc/self/mountinfo.

Backup and sync scans use this to keep out of a drive or snapshot mount (reading one
would fetch the whole repository back through itself); the mount commands use it to
wait for a mount to come up and to take one down. No FUSE library is imported here.

Every AnySync mount has the file system type "fuse.anysync…": the drive uses the
subtype "anysync", the read-only snapshot view "anysync-snapshots".

The parsing is a pure function over the text of a mountinfo file (`parse_mountinfo`);
only the thin wrappers below read /proc or run fusermount3.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anysync.errors import AnySyncError

FSTYPE_PREFIX = "fuse.anysync"
MOUNTINFO = Path("/proc/self/mountinfo")

# The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


class UnmountError(AnySyncError):
    """A mount point could not be unmounted."""


@dataclass(frozen=True)
class MountEntry:
    mount_point: Path
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # Decode on bytes so that an escaped byte sequence of a UTF-8 name comes back whole.
    raw = os.fsencode(field)
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw))


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts of a mountinfo text, in its order; malformed lines are skipped.

    Line format (proc(5)): ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...]
    - FSTYPE SOURCE SUPER_OPTIONS
    """
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        entries.append(
            MountEntry(
                mount_point=Path(_unescape(fields[4])),
                fstype=_unescape(fields[sep + 1]),
                source=_unescape(fields[sep + 2]),
            )
        )
    return entries


def is_anysync_fstype(fstype: str) -> bool:
    return fstype.startswith(FSTYPE_PREFIX)


def _read_mountinfo() -> list[MountEntry]:
    try:
        return parse_mountinfo(MOUNTINFO.read_text("utf-8", errors="surrogateescape"))
    except OSError:
        return []


def _normal(path: Path) -> Path:
    """An absolute path without symlinks in its parents; the last component is not
    followed (stat-ing a dead FUSE mount point fails or hangs)."""
    absolute = Path(os.path.abspath(path))
    if absolute.parent == absolute:
        return absolute
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def anysync_mounts() -> list[Path]:
    """The mount points of every AnySync FUSE mount this process can see."""
    return [e.mount_point for e in _read_mountinfo() if is_anysync_fstype(e.fstype)]


def mount_type(path: Path) -> str | None:
    """The file system type of the mount at exactly `path`; None if it is no mount point.
    When mounts are stacked on one point, the topmost (listed last) counts."""
    target = _normal(path)
    found: str | None = None
    for entry in _read_mountinfo():
        if entry.mount_point == target:
            found = entry.fstype
    return found


def is_anysync_mount(path: Path) -> bool:
    fstype = mount_type(path)
    return fstype is not None and is_anysync_fstype(fstype)


def lazy_unmount(path: Path) -> None:
    """Detach the mount at `path` now; the kernel finishes once nothing uses it."""
    target = str(_normal(path))
    errors: list[str] = []
    for command in (["fusermount3", "-uz", target], ["umount", "-l", target]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            errors.append(f"{command[0]} not found")
            continue
        if done.returncode == 0:
            return
        errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    raise UnmountError(f"cannot unmount {target}: {errors[0]}")


def wait_mounted(path: Path, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
    """Poll until `path` is an AnySync mount point: True. False after `timeout` seconds,
    or as soon as `alive()` says the process that should mount it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        if is_anysync_mount(path):
            return True
        if alive is not None and not alive():
            return is_anysync_mount(path)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
