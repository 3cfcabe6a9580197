"""What a backup leaves out: `--exclude` patterns, `--exclude-caches`, `--one-file-system`.

Patterns are gitignore syntax matched against the absolute path (as restic users write
them): `*.iso` and `node_modules/` anywhere, `/home/me/Downloads` at exactly that path,
`!keep.iso` to take one back. A cache directory is one holding a `CACHEDIR.TAG` that
starts with the signature of the Cache Directory Tagging Specification
(https://bford.info/cachedir/); it is left out whole. With one file system, a directory
on another device than the backed-up paths (a mount point) is left out whole.
Decisions only: the walker (client/backup.py) asks, with the lstat it has already.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pathspec

from anysync.errors import UsageError

CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


class Exclusions:
    def __init__(
        self,
        patterns: Iterable[str] = (),
        caches: bool = False,
        devices: frozenset[int] | None = None,
    ) -> None:
        lines = [p for p in patterns if p.strip() and not p.lstrip().startswith("#")]
        for line in lines:  # one at a time, to name the one that is wrong
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except ValueError as exc:
                raise UsageError(f"--exclude {line!r} is not a pattern: {exc}") from None
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        self._caches = caches
        self._devices = devices  # None: any file system

    @property
    def active(self) -> bool:
        return self._spec is not None or self._caches or self._devices is not None

    def excluded(self, path: bytes, st: os.stat_result) -> bool:
        """Whether to leave `path` (absolute; `st` its lstat) out of the backup."""
        is_dir = stat.S_ISDIR(st.st_mode)
        if self._spec is not None:
            text = os.fsdecode(path).lstrip("/") + ("/" if is_dir else "")
            if self._spec.match_file(text):
                return True
        if not is_dir:
            return False
        if self._devices is not None and st.st_dev not in self._devices:
            return True
        return self._caches and _is_cache_dir(path)


def _is_cache_dir(path: bytes) -> bool:
    # O_NONBLOCK: a FIFO named CACHEDIR.TAG must not hang the backup; only a regular
    # file counts.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(os.path.join(path, CACHEDIR_TAG), flags)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)


def read_exclude_file(path: Path) -> list[str]:
    """The patterns of an --exclude-file: one per line, `#` comments and blank lines
    skipped (done by Exclusions)."""
    try:
        return path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise UsageError(f"cannot read the exclude file {path}: {why}") from None


def devices_of(paths: Iterable[Path]) -> frozenset[int]:
    """The file systems the backed-up paths are on (for --one-file-system)."""
    found = set()
    for p in paths:
        try:
            found.add(os.stat(p).st_dev)
        except OSError:
            continue  # the backup reports the unreadable path itself
    return frozenset(found)
