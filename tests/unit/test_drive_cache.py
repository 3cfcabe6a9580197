"""The drive's chunk cache on a real file system: what it stores, what survives a restart,
and what a full disk or an eviction behind a reader's back leave behind."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client.drive.cache import ChunkCache
from anysync.types import BlobId

KIB = 1024


def bid(n: int) -> BlobId:
    return BlobId(bytes([n]) * 32)


def chunk_file(root: Path, b: BlobId) -> Path:
    return root / b.hex()[:2] / b.hex()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_stored_chunk_is_read_back_at_any_offset(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path)
    data = os.urandom(100 * KIB)
    cache.put(bid(1), data)

    assert cache.has(bid(1)) and not cache.has(bid(2))
    assert cache.size_of(bid(1)) == len(data) and cache.size_of(bid(2)) is None
    assert cache.read(bid(1), 0, len(data)) == data
    assert cache.read(bid(1), 1000, 5) == data[1000:1005]
    assert cache.read(bid(1), len(data) - 3, 100) == data[-3:]  # short at the end
    assert cache.usage() == len(data)
    assert [(c.bid, c.size) for c in cache.entries()] == [(bid(1), len(data))]


def test_chunk_files_are_private(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    ChunkCache(root).put(bid(1), b"secret plaintext")
    path = chunk_file(root, bid(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert path.read_bytes() == b"secret plaintext"


def test_put_many_stores_every_chunk(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path)
    blobs = {bid(n): os.urandom(n * KIB) for n in range(1, 6)}
    cache.put_many(blobs)
    assert {c.bid: c.size for c in cache.entries()} == {b: len(d) for b, d in blobs.items()}
    assert all(cache.read(b, 0, len(d)) == d for b, d in blobs.items())
    assert cache.usage() == sum(len(d) for d in blobs.values())
    assert len(files_under(tmp_path)) == len(blobs)


def test_remove_frees_the_chunk_and_says_how_much(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path)
    cache.put(bid(1), b"x" * 300)
    cache.put(bid(2), b"y" * 200)
    assert cache.remove(bid(1)) == 300
    assert cache.remove(bid(1)) == 0
    assert not cache.has(bid(1)) and not chunk_file(tmp_path, bid(1)).exists()
    assert cache.usage() == 200


def test_reading_a_chunk_evicted_meanwhile_raises_file_not_found(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path)
    cache.put(bid(1), b"data")
    chunk_file(tmp_path, bid(1)).unlink()  # gone behind the cache's back
    with pytest.raises(FileNotFoundError):
        cache.read(bid(1), 0, 4)
    assert not cache.has(bid(1)) and cache.usage() == 0
    cache.put(bid(1), b"data")  # the caller fetches it again
    assert cache.read(bid(1), 0, 4) == b"data"


def test_a_restart_finds_the_chunks_and_their_last_use(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path)
    cache.put(bid(1), b"a" * 10)
    cache.put(bid(2), b"b" * 20)
    long_ago = time.time() - 86400
    os.utime(chunk_file(tmp_path, bid(1)), (long_ago, long_ago))
    leftover = chunk_file(tmp_path, bid(3)).with_name(bid(3).hex() + ".tmp-1234abcd")
    leftover.parent.mkdir(mode=0o700)
    leftover.write_bytes(b"half a chunk from a crash")
    stranger = tmp_path / "ab" / "README"
    stranger.parent.mkdir(mode=0o700)
    stranger.write_text("not a chunk")

    again = ChunkCache(tmp_path)

    assert {c.bid: c.size for c in again.entries()} == {bid(1): 10, bid(2): 20}
    last_used = {c.bid: c.last_used for c in again.entries()}
    assert last_used[bid(1)] == pytest.approx(long_ago, abs=1)
    assert last_used[bid(2)] > long_ago + 3600
    assert again.usage() == 30
    assert not leftover.exists()
    assert stranger.exists()  # not ours to delete


def test_a_read_records_the_use_and_writes_it_to_disk_at_most_once_a_minute(
    tmp_path: Path,
) -> None:
    cache = ChunkCache(tmp_path)
    cache.put(bid(1), b"data")
    path = chunk_file(tmp_path, bid(1))
    long_ago = time.time() - 86400
    os.utime(path, (long_ago, long_ago))
    cache = ChunkCache(tmp_path)  # last use = long ago, as found on disk

    before = time.time()
    cache.read(bid(1), 0, 1)
    (entry,) = cache.entries()
    assert entry.last_used >= before
    assert path.stat().st_mtime >= before - 1  # survives a restart

    os.utime(path, (long_ago, long_ago))
    cache.read(bid(1), 0, 1)
    assert cache.entries()[0].last_used >= before  # in memory at once...
    assert path.stat().st_mtime == pytest.approx(long_ago)  # ...on disk not again within 60 s


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real file system that fills up (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_leaves_nothing_behind(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as root:
        cache = ChunkCache(root)
        with pytest.raises(OSError) as exc:
            cache.put(bid(1), os.urandom(2048 * KIB))
        assert exc.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as exc:
            cache.put_many({bid(2): os.urandom(600 * KIB), bid(3): os.urandom(600 * KIB)})
        assert exc.value.errno == errno.ENOSPC

        assert files_under(root) == []
        assert cache.entries() == [] and cache.usage() == 0
        cache.put(bid(4), b"small enough")  # the space came back
        assert cache.read(bid(4), 0, 100) == b"small enough"


def test_threads_storing_reading_and_removing_keep_the_index_true(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                b = bid(rng.randrange(16))
                action = rng.randrange(3)
                if action == 0:
                    cache.put(b, bytes([b.raw[0]]) * (b.raw[0] + 1))
                elif action == 1:
                    with contextlib.suppress(FileNotFoundError):
                        assert cache.read(b, 0, 1) == b.raw[:1]
                else:
                    cache.remove(b)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    on_disk = {BlobId.from_hex(p.name): p.stat().st_size for p in files_under(tmp_path)}
    assert {c.bid: c.size for c in cache.entries()} == on_disk
    assert cache.usage() == sum(on_disk.values())
