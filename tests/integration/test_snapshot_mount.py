"""`anysync mount`: every backup snapshot as a read-only FUSE directory (drive/snapfs.py).

The end-to-end tests run the real CLI against a real server and mount for real; the
read-path tests drive the same file system operations without a mount, over a source
that counts what is fetched.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from anysync.client import mounts
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import Snapshot
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import AnySyncError, IntegrityError
from anysync.types import BlobId
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import CLIENT, Client, Server, base_env

# ---------------------------------------------------------------- end to end


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "snapshots"
    mnt.mkdir()
    yield mnt
    subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)


def _write_tree(src: Path, a_text: bytes, big: bytes) -> None:
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "a.txt").write_bytes(a_text)
    (src / "sub" / "big.bin").write_bytes(big)
    if not (src / "link").is_symlink():
        (src / "link").symlink_to("a.txt")


@requires_fuse
def test_each_snapshot_reads_as_it_was_backed_up(
    server: Server, device_a: Client, tmp_path: Path, mountpoint: Path
) -> None:
    src = tmp_path / "Docs"
    old_big = os.urandom(5 * 1024 * 1024)  # several chunks
    _write_tree(src, b"the old text\n", old_big)
    device_a.signup(server, "mount@example.org")
    device_a.run("backup", str(src))
    new_big = bytearray(old_big)
    new_big[3_000_000:3_001_000] = os.urandom(1000)
    _write_tree(src, b"the new, longer text\n", bytes(new_big))
    device_a.run("backup", str(src))
    first, second = (s["id"][:8] for s in device_a.snapshots())

    out = device_a.run("mount", str(mountpoint))
    assert "mounted the snapshots at" in out.stdout
    assert mounts.mount_type(mountpoint) == "fuse.anysync-snapshots"
    assert mountpoint in mounts.anysync_mounts()

    names = sorted(os.listdir(mountpoint))
    assert len(names) == 3 and "latest" in names
    by_id = {n.rsplit("_", 1)[-1]: n for n in names if n != "latest"}
    assert set(by_id) == {first, second}
    old_dir, new_dir = mountpoint / by_id[first], mountpoint / by_id[second]
    assert os.readlink(mountpoint / "latest") == by_id[second]

    assert (old_dir / "Docs" / "a.txt").read_bytes() == b"the old text\n"
    assert (new_dir / "Docs" / "a.txt").read_bytes() == b"the new, longer text\n"
    assert (old_dir / "Docs" / "sub" / "big.bin").read_bytes() == old_big
    assert (mountpoint / "latest" / "Docs" / "sub" / "big.bin").read_bytes() == bytes(new_big)
    assert os.readlink(new_dir / "Docs" / "link") == "a.txt"
    # Reads at offsets, across chunk boundaries, past the end.
    fd = os.open(new_dir / "Docs" / "sub" / "big.bin", os.O_RDONLY)
    try:
        for off, size in [(2_999_000, 4000), (1_048_000, 300_000), (len(new_big) - 10, 100)]:
            assert os.pread(fd, size, off) == bytes(new_big[off : off + size])
        assert os.pread(fd, 10, len(new_big) + 5) == b""
    finally:
        os.close(fd)

    listing = subprocess.run(
        ["ls", "-lR", str(mountpoint) + "/"], capture_output=True, text=True, check=True
    ).stdout
    sizes = {m[1]: int(m[0]) for m in re.findall(r" (\d+) \w+ +\d+ +[\d:]+ (\S+)", listing)}
    assert sizes["big.bin"] == len(old_big)
    assert sorted(int(n) for n in re.findall(r" (\d+) \w+ +\d+ +[\d:]+ a\.txt", listing)) == [
        len(b"the old text\n"),
        len(b"the new, longer text\n"),
    ]

    with pytest.raises(OSError) as err:
        (old_dir / "Docs" / "a.txt").write_bytes(b"x")
    assert err.value.errno in (errno.EROFS, errno.EACCES)

    assert len(_serving(mountpoint)) == 1

    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    assert mounts.mount_type(mountpoint) is None
    _wait_until(lambda: not _serving(mountpoint), "the mount process to end")


def _serving(mnt: Path) -> list[int]:
    """The PIDs of anysync processes serving a mount at `mnt`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and os.fsencode(mnt) in argv:
            pids.append(int(proc.name))
    return pids


def _wait_until(done: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.05)


@requires_fuse
def test_foreground_mount_unmounts_on_ctrl_c(
    server: Server, device_a: Client, tmp_path: Path, mountpoint: Path
) -> None:
    src = tmp_path / "Fg"
    src.mkdir()
    (src / "x.txt").write_text("foreground")
    device_a.signup(server, "fg@example.org")
    device_a.run("backup", str(src))
    env = base_env() | {
        "ANYSYNC_HOME": str(device_a.home),
        "ANYSYNC_TESTONLY_FAULT": "crypto.scrypt",
    }
    proc = subprocess.Popen(
        [CLIENT, "mount", "--foreground", str(mountpoint)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert mounts.wait_mounted(mountpoint, 60, alive=lambda: proc.poll() is None)
        assert (mountpoint / "latest" / "Fg" / "x.txt").read_text() == "foreground"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert b"mounted the snapshots at" in out
        assert mounts.mount_type(mountpoint) is None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@requires_fuse
def test_a_new_backup_appears_in_the_mounted_root(
    server: Server, device_a: Client, tmp_path: Path, mountpoint: Path
) -> None:
    src = tmp_path / "Notes"
    src.mkdir()
    (src / "n.txt").write_text("one")
    device_a.signup(server, "later@example.org")
    device_a.run("backup", str(src))
    device_a.run("mount", str(mountpoint))
    assert len(os.listdir(mountpoint)) == 2
    (src / "n.txt").write_text("two")
    device_a.run("backup", str(src))
    newest = device_a.snapshots()[-1]["id"][:8]
    # The root is listed again at most every REFRESH seconds; a lookup of a name it
    # does not know yet asks at once when the last listing is that old.
    deadline = 30
    names: list[str] = []
    for _ in range(deadline * 10):
        names = os.listdir(mountpoint)
        if len(names) == 3:
            break
        time.sleep(0.1)
    assert any(n.endswith("_" + newest) for n in names), names
    assert (mountpoint / "latest" / "Notes" / "n.txt").read_text() == "two"


def test_background_start_with_a_wrong_passphrase_mounts_nothing(
    server: Server, device_a: Client, tmp_path: Path, mountpoint: Path
) -> None:
    device_a.signup(server, "wrong@example.org")
    device_a.run("keys", "protect", "passphrase", env={"ANYSYNC_NEW_DEVICE_PASSPHRASE": "right"})
    wrong = {"ANYSYNC_DEVICE_PASSPHRASE": "not it", "ANYSYNC_TESTONLY_FAULT": ""}
    out = device_a.run("mount", str(mountpoint), check=False, env=wrong)
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == ["anysync: error: wrong device passphrase"]
    assert mounts.mount_type(mountpoint) is None


def test_mounting_on_a_missing_directory_is_a_usage_error(device_a: Client, tmp_path: Path) -> None:
    out = device_a.run("mount", str(tmp_path / "absent"), check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == f"anysync: error: {tmp_path / 'absent'} is not a directory"


# ---------------------------------------------------------------- the read path, unmounted


class CountingSource:
    """A snapshot source in memory that records every chunk fetch."""

    def __init__(self, chunks: dict[BlobId, bytes], trees: dict[BlobId, list[TreeEntry]]):
        self.chunks, self.trees = chunks, trees
        self.fetched: list[BlobId] = []
        self.tree_loads = 0

    def snapshots(self) -> list[Snapshot]:
        return []

    def load_tree(self, bid: BlobId) -> list[TreeEntry]:
        self.tree_loads += 1
        return self.trees[bid]

    def load_chunks(self, ids: Sequence[BlobId]) -> Mapping[BlobId, bytes | AnySyncError]:
        self.fetched.extend(ids)
        out: dict[BlobId, bytes | AnySyncError] = {}
        for i in ids:
            out[i] = self.chunks.get(i) or IntegrityError(f"blob {i.short()} is corrupt")
        return out


def _bid(n: int) -> BlobId:
    return BlobId(n.to_bytes(32, "big"))


SIZES = [1000, 2000, 3000, 4000, 500, 700]  # ends 1000 3000 6000 10000 10500 11200


def _file(record_sizes: bool) -> tuple[TreeEntry, dict[BlobId, bytes]]:
    chunks = {_bid(100 + i): os.urandom(size) for i, size in enumerate(SIZES)}
    entry = TreeEntry(b"f", EntryType.FILE, 0o644, 0, sum(SIZES), chunks=tuple(chunks))
    if record_sizes:
        entry = dataclasses.replace(entry, chunk_sizes=tuple(SIZES))
    return entry, chunks


class Harness:
    """SnapshotFS over one snapshot holding d/f, its operations called directly."""

    def __init__(self, entry: TreeEntry, chunks: dict[BlobId, bytes]) -> None:
        snapfs = pytest.importorskip("anysync.client.drive.snapfs")
        snap_tree, top = _bid(1), _bid(2)
        d = TreeEntry(b"d", EntryType.DIR, 0o755, 0, subtree=top)
        self.source = CountingSource(chunks, {snap_tree: [d], top: [entry]})
        self.fs = snapfs.SnapshotFS(self.source)
        self.content = b"".join(chunks[c] for c in entry.chunks)
        commit = Commit(
            kind="backup", tree=snap_tree, parents=(), ref="b-x", counter=1,
            time_ns=1_700_000_000 * 10**9, device_id=1, device="dev", hostname="host",
        )  # fmt: skip
        self.snapshot = Snapshot(_bid(3), commit)
        self.fs.set_snapshots([self.snapshot])
        self.snapshot_name = snapfs.snapshot_dir_name(self.snapshot)

    def lookup_file(self) -> tuple[int, int]:
        """(inode, size) of d/f, found by name from the root."""
        import pyfuse3
        import trio

        async def walk() -> tuple[int, int]:
            node = pyfuse3.ROOT_INODE
            attr = None
            for name in (self.snapshot_name, b"d", b"f"):
                attr = await self.fs.lookup(node, name, None)
                node = attr.st_ino
            assert attr is not None
            return attr.st_ino, attr.st_size

        result: tuple[int, int] = trio.run(walk)
        return result

    def read(self, inode: int, off: int, size: int) -> bytes:
        import trio

        async def go() -> bytes:
            info = await self.fs.open(inode, os.O_RDONLY, None)
            data: bytes = await self.fs.read(info.fh, off, size)
            return data

        result: bytes = trio.run(go)
        return result


def test_listing_reads_trees_only() -> None:
    h = Harness(*_file(record_sizes=False))
    _, size = h.lookup_file()
    assert size == sum(SIZES)
    assert h.source.fetched == [] and h.source.tree_loads == 2
    h.lookup_file()
    assert h.source.tree_loads == 2  # each directory's tree is decoded once


def test_recorded_sizes_fetch_only_the_chunks_of_the_range() -> None:
    entry, chunks = _file(record_sizes=True)
    h = Harness(entry, chunks)
    inode, _ = h.lookup_file()
    assert h.read(inode, 3500, 1000) == h.content[3500:4500]
    assert h.source.fetched == [entry.chunks[2]]
    assert h.read(inode, 5990, 20) == h.content[5990:6010]  # across a boundary
    assert h.source.fetched == [entry.chunks[2], entry.chunks[3]]  # chunk 2 from the LRU
    assert h.read(inode, 10_400, 10_000) == h.content[10_400:]
    assert h.source.fetched[2:] == [entry.chunks[4], entry.chunks[5]]


def test_unrecorded_sizes_are_learnt_in_order_once() -> None:
    entry, chunks = _file(record_sizes=False)
    h = Harness(entry, chunks)
    inode, _ = h.lookup_file()
    assert h.read(inode, 3500, 1000) == h.content[3500:4500]
    assert h.source.fetched == list(entry.chunks[:4])  # learning: one batch in order
    assert h.read(inode, 0, 11_200) == h.content
    assert h.source.fetched[4:] == list(entry.chunks[4:])  # the rest; the first four cached


@pytest.mark.parametrize("record_sizes", [False, True])
def test_every_range_reads_exactly(record_sizes: bool) -> None:
    h = Harness(*_file(record_sizes))
    inode, _ = h.lookup_file()
    for off in [0, 1, 999, 1000, 1001, 2999, 6000, 9999, 10_499, 11_199, 11_200, 20_000]:
        for length in [1, 7, 1000, 4096, 131_072]:
            assert h.read(inode, off, length) == h.content[off : off + length], (off, length)


def test_a_chunk_that_fails_authentication_is_an_io_error() -> None:
    entry, chunks = _file(record_sizes=False)
    h = Harness(entry, chunks)
    del h.source.chunks[entry.chunks[1]]
    inode, _ = h.lookup_file()
    import pyfuse3

    with pytest.raises(pyfuse3.FUSEError) as err:
        h.read(inode, 1500, 10)
    assert err.value.errno == errno.EIO


def test_snapshots_of_one_second_with_one_short_id_get_distinct_names() -> None:
    import pyfuse3
    import trio

    snapfs = pytest.importorskip("anysync.client.drive.snapfs")
    h = Harness(*_file(record_sizes=False))
    commit = h.snapshot.commit
    twins = [Snapshot(BlobId(b"\xab" * 8 + bytes([n]) * 24), commit) for n in (1, 2)]
    h.fs.set_snapshots(twins)
    short, full = snapfs.snapshot_dir_name(twins[0]), snapfs.snapshot_dir_name(twins[1], True)
    assert short != full

    async def resolve() -> tuple[int, int, bytes]:
        root = pyfuse3.ROOT_INODE
        a = await h.fs.lookup(root, short, None)
        b = await h.fs.lookup(root, full, None)
        latest = await h.fs.lookup(root, b"latest", None)
        return a.st_ino, b.st_ino, await h.fs.readlink(latest.st_ino, None)

    a, b, target = trio.run(resolve)
    assert a != b and target == full
