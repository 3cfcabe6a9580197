"""The drive's chunk cache: plaintext chunks on disk, one file per blob ID.

Layout: `root/<first 2 hex>/<64 hex>`, directories 0700 and files 0600 (plaintext at rest, like
a sync folder). A chunk is written to `<hex>.tmp-<random>` and renamed into place; a crash
leaves at most a temp file, which the next start deletes. With `durable` the temp file is
fsynced first, so a chunk under its final name always holds the whole chunk; the drive
turns that off (an fsync per chunk cost a third of an uncached read) and checks instead
each chunk a previous run wrote against its blob ID before using it (content.py). The
directory is not fsynced after the rename: a chunk lost in a crash is only fetched again.

The index (size and last use of every chunk) lives in memory and is rebuilt from the files at
start: size from st_size, last use from st_mtime. Reads record the last use in memory and push
it to the file's mtime at most once a minute per chunk, so the LRU order survives a restart
without a write per read.

Every method may be called from several threads at once (trio worker threads). A chunk may be
evicted between `has()` and `read()`; `read()` then raises FileNotFoundError and the caller
fetches it again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from anysync.types import BLOB_ID_SIZE, BlobId

TEMP_MARK = ".tmp-"
MTIME_EVERY = 60.0  # seconds between two writes of one chunk's last use to its mtime
_HEX_NAME_LEN = 2 * BLOB_ID_SIZE


@dataclass(frozen=True, slots=True)
class CachedChunk:
    bid: BlobId
    size: int
    last_used: float  # time.time() of the last read or write


@dataclass(slots=True)
class _Entry:
    size: int
    last_used: float
    last_stored: float  # the last use as written to the file's mtime


class ChunkCache:
    def __init__(self, root: Path, durable: bool = True) -> None:
        self.durable = durable
        self._root = root
        self._lock = threading.Lock()
        self._index: dict[BlobId, _Entry] = {}
        self._usage = 0
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._scan()

    def has(self, bid: BlobId) -> bool:
        with self._lock:
            return bid in self._index

    def size_of(self, bid: BlobId) -> int | None:
        with self._lock:
            entry = self._index.get(bid)
            return None if entry is None else entry.size

    def put(self, bid: BlobId, data: bytes) -> None:
        """Store one chunk. On OSError (ENOSPC, say) nothing is left behind and it re-raises."""
        self.put_many({bid: data})

    def put_many(self, blobs: Mapping[BlobId, bytes]) -> None:
        """Store several chunks (a read window): write and fsync every temp file, then rename
        each into place. On OSError, the temp files are removed; chunks already renamed stay."""
        new = {bid: data for bid, data in blobs.items() if not self.has(bid)}
        temps: dict[BlobId, Path] = {}
        try:
            for bid, data in new.items():
                temps[bid] = self._write_temp(bid, data)
            now = time.time()
            for bid, tmp in list(temps.items()):
                with self._lock:
                    tmp.rename(self._path(bid))
                    del temps[bid]
                    self._add(bid, len(new[bid]), now)
        finally:
            for tmp in temps.values():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def read(self, bid: BlobId, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; FileNotFoundError if the chunk is not cached."""
        path = self._path(bid)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._forget_if_gone(bid, path)  # removed behind our back: the index must not claim it
            raise
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        self._touch(bid, path)
        return data

    def remove(self, bid: BlobId) -> int:
        """Delete one chunk; the bytes freed (0 if it was not cached)."""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self._path(bid).unlink()
            entry = self._index.pop(bid, None)
            if entry is None:
                return 0
            self._usage -= entry.size
            return entry.size

    def usage(self) -> int:
        with self._lock:
            return self._usage

    def entries(self) -> list[CachedChunk]:
        with self._lock:
            return [CachedChunk(bid, e.size, e.last_used) for bid, e in self._index.items()]

    def _path(self, bid: BlobId) -> Path:
        name = bid.hex()
        return self._root / name[:2] / name

    def _write_temp(self, bid: BlobId, data: bytes) -> Path:
        final = self._path(bid)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = final.with_name(final.name + TEMP_MARK + secrets.token_hex(4))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _add(self, bid: BlobId, size: int, mtime: float) -> None:
        """Index a chunk file (the lock is held)."""
        old = self._index.get(bid)
        if old is not None:
            self._usage -= old.size
        self._index[bid] = _Entry(size, mtime, mtime)
        self._usage += size

    def _forget_if_gone(self, bid: BlobId, path: Path) -> None:
        with self._lock:  # renames and unlinks happen under the lock: this check is current
            if path.exists():
                return  # stored again since the failed open
            entry = self._index.pop(bid, None)
            if entry is not None:
                self._usage -= entry.size

    def _touch(self, bid: BlobId, path: Path) -> None:
        now = time.time()
        with self._lock:
            entry = self._index.get(bid)
            if entry is None:
                return
            entry.last_used = now
            if now - entry.last_stored < MTIME_EVERY:
                return
            entry.last_stored = now
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
            os.utime(path, (now, now))

    def _scan(self) -> None:
        """Index the chunk files left by an earlier run and delete its temp files."""
        for sub in self._root.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for path in sub.iterdir():
                if TEMP_MARK in path.name:
                    path.unlink()
                    continue
                bid = _blob_id(path.name)
                if bid is None:
                    continue  # not ours: leave it alone
                st = path.stat()
                self._add(bid, st.st_size, st.st_mtime)


def _blob_id(name: str) -> BlobId | None:
    if len(name) != _HEX_NAME_LEN:
        return None
    try:
        return BlobId.from_hex(name)
    except ValueError:
        return None
