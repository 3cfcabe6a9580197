"""LocalStore: objects as files in a directory tree, one file per key.

Layout under `root`: each key is a relative path (`ab12…/3f/3f9a…`); `.tmp/` holds
objects being written. `.tmp/` is inside `root`, so the final rename never crosses a
file system, and its name is not a valid key, so list() never sees it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from anysync.errors import NotFound, UsageError
from anysync.store.base import READ_CHUNK, OutOfRangeError, Readable, check_key, check_prefix

_TMP_DIR = ".tmp"
# A temp file this old belongs to no live writer (puts take seconds): safe to delete.
_STALE_TMP_SECONDS = 24 * 3600


class LocalStore:
    """An ObjectStore in a local directory (see anysync.store.base for the contract)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / _TMP_DIR
        self._tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_stale_temp_files()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: Readable | Path, size: int) -> None:
        final = self._path(key)
        if size < 0:
            raise UsageError(f"negative object size {size}")
        tmp = self.temp_path()
        try:
            with open(tmp, "xb") as out:
                if isinstance(source, Path):
                    with open(source, "rb") as f:
                        _copy_exactly(f, out, size)
                else:
                    _copy_exactly(source, out, size)
                out.flush()
                os.fsync(out.fileno())
            self._make_dirs(final.parent)
            tmp.replace(final)
        except BaseException:
            # BaseException too: a cancelled upload must not leave a temp file behind.
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def temp_path(self) -> Path:
        return self._tmp / f"{secrets.token_hex(8)}.part"

    def adopt(self, key: str, path: Path, size: int) -> None:
        try:
            final = self._path(key)
            if path.parent != self._tmp:
                raise UsageError(f"{path} is not in the store's temporary area")
            with open(path, "rb") as f:
                actual = os.fstat(f.fileno()).st_size
                if actual != size:
                    raise UsageError(f"the data is {actual} bytes, not {size}")
                os.fsync(f.fileno())
            self._make_dirs(final.parent)
            path.replace(final)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def get_range(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        path = self._path(key)
        size = self.size(key)
        end = size if length == 0 else offset + length
        if offset < 0 or length < 0 or offset > size or end > size:
            raise OutOfRangeError(
                f"range {offset}+{length} is outside object {key} of {size} bytes"
            )
        # Checked eagerly above; the file is opened only once the caller starts reading,
        # so a caller that never iterates leaks no file descriptor.
        return _read_pieces(path, offset, end - offset)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no object {key}") from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        # Walk only the deepest directory the prefix names, not the whole tree.
        start_dir, _, _ = prefix.rpartition("/")
        top = self.root / start_dir if start_dir else self.root
        for dirpath, dirnames, filenames in os.walk(top):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d != _TMP_DIR]
                rel = ""
            for name in filenames:
                key = f"{rel}/{name}" if rel else name
                if key.startswith(prefix):
                    yield key

    def _make_dirs(self, directory: Path) -> None:
        """mkdir -p, fsyncing each new directory's parent so the entry is durable."""
        missing: list[Path] = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another thread was faster
                d.mkdir(mode=0o700)
            _fsync_dir(d.parent)

    def _remove_stale_temp_files(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()


def _copy_exactly(source: Readable, out: BinaryIO, size: int) -> None:
    remaining = size
    while remaining:
        piece = source.read(min(remaining, READ_CHUNK))
        if not piece:
            raise UsageError(f"the data ended after {size - remaining} of {size} bytes")
        if len(piece) > remaining:
            raise UsageError(f"read() returned more than the {remaining} bytes asked for")
        out.write(piece)
        remaining -= len(piece)


def _read_pieces(path: Path, offset: int, length: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while length > 0:
                piece = f.read(min(length, READ_CHUNK))
                if not piece:
                    raise NotFound(f"object {path.name} shrank while being read")
                length -= len(piece)
                yield piece
    except FileNotFoundError:
        raise NotFound(f"object {path.name} was deleted before it was read") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
