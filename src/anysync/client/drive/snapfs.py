"""A read-only FUSE view of every backup snapshot (`anysync mount`), like `restic mount`.

Layout of the mount point:

    MOUNT/
      2026-11-30T22:00:05_9f3e1a20/   one directory per snapshot, oldest first: the local
        Documents/ ...                time of the backup and the short snapshot ID; inside,
                                      the backed-up paths by their last component, as
                                      `anysync ls` and `anysync restore` name them
      latest -> 2026-12-01T04:12:37_ab12cd34    the newest snapshot of the account

Snapshots are listed when the mount starts and again, at most every REFRESH seconds, when
the root directory is listed or a name missing from it is looked up: a backup made
meanwhile appears, a forgotten one disappears from the root. Whatever was reached stays
readable as it was (snapshots never change).

Nothing is read before it is asked for: a directory's tree is loaded when it is first
looked into, a file's chunks when they are read, and only those under the requested
range. Every blob goes through the Repository, which authenticates it; a blob that fails
(tampered, lost) is an I/O error (EIO) for that call, with a warning in the log.

Where a tree records each chunk's size (TreeEntry.chunk_sizes), an offset maps straight
to its chunks; for an older tree (no sizes) the chunks are fetched in order up to the
offset once and their sizes remembered. Decoded chunks are kept in a small LRU
(CHUNK_CACHE_BYTES) so that the kernel's sequential 128 KiB reads of a chunk fetch it
once.

Repository calls block; they run in a trio worker thread, one at a time (the Repository
and the state database are not meant for concurrent use, and a read-only browse does not
need more). Inodes are allocated here and kept for the life of the mount (the kernel's
forget is ignored: a view of snapshots has few inodes compared with its data).

Unmount with `fusermount3 -u MOUNT` (or Ctrl-C / SIGTERM to the process that serves it).
"""

from __future__ import annotations

import bisect
import errno
import itertools
import logging
import os
import signal
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import pyfuse3
import trio

from anysync.client.repo.refs import Snapshot
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import AnySyncError
from anysync.types import BlobId

log = logging.getLogger(__name__)

MOUNT_OPTIONS = {"fsname=anysync", "subtype=anysync-snapshots", "ro", "default_permissions"}
CHUNK_CACHE_BYTES = 64 * 1024 * 1024
REFRESH = 10.0  # seconds between two listings of the snapshots
LEARN_BATCH = 4  # chunks fetched at a time to learn the sizes of an older tree's file
LATEST = b"latest"
ROOT = pyfuse3.ROOT_INODE
LATEST_INODE = ROOT + 1
# Snapshots never change, so the kernel may keep what it learnt; the root and `latest`
# follow new backups, so they are asked again soon.
STABLE_TIMEOUT = 3600.0
ROOT_TIMEOUT = 1.0

T = TypeVar("T")


class SnapshotSource(Protocol):
    """What the view reads, all blocking (cmd_mount builds it on an open session)."""

    def snapshots(self) -> list[Snapshot]:
        """Every readable, not forgotten backup snapshot, oldest first."""

    def load_tree(self, bid: BlobId) -> list[TreeEntry]: ...

    def load_chunks(self, ids: Sequence[BlobId]) -> Mapping[BlobId, bytes | AnySyncError]:
        """Authenticated plaintext of data blobs; failures per ID."""


class MountError(AnySyncError):
    """The file system could not be mounted."""


# ---------------------------------------------------------------- decisions


def snapshot_dir_name(snap: Snapshot, full_id: bool = False) -> bytes:
    """The directory name of a snapshot: sortable local time, then the short ID."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(snap.commit.time_ns / 1e9))
    return f"{when}_{snap.id.hex() if full_id else snap.id.short()}".encode()


def known_ends(entry: TreeEntry) -> list[int]:
    """The end offset of each chunk of a file, from its recorded chunk sizes; [] when the
    tree records none, or sizes that do not add up to the file (then they are learnt)."""
    sizes = entry.chunk_sizes
    if len(sizes) != len(entry.chunks) or sum(sizes) != entry.size:
        return []
    return list(itertools.accumulate(sizes))


def chunk_span(ends: Sequence[int], start: int, end: int) -> range:
    """The indexes of the chunks holding bytes [start, end), given the chunks' end
    offsets (known at least up to `end`); start < end."""
    first = bisect.bisect_right(ends, start)
    last = bisect.bisect_left(ends, end)
    return range(first, min(last, len(ends) - 1) + 1)


class ChunkLRU:
    """Decoded chunks, least recently used dropped first beyond `limit` bytes."""

    def __init__(self, limit: int = CHUNK_CACHE_BYTES) -> None:
        self.limit = limit
        self.used = 0
        self._items: OrderedDict[BlobId, bytes] = OrderedDict()

    def get(self, bid: BlobId) -> bytes | None:
        data = self._items.get(bid)
        if data is not None:
            self._items.move_to_end(bid)
        return data

    def put(self, bid: BlobId, data: bytes) -> None:
        if bid in self._items or len(data) > self.limit:
            return
        self._items[bid] = data
        self.used += len(data)
        while self.used > self.limit:
            _, dropped = self._items.popitem(last=False)
            self.used -= len(dropped)


# ---------------------------------------------------------------- the file system


@dataclass
class _Node:
    entry: TreeEntry  # the root and snapshot directories get a made-up one
    children: dict[bytes, int] | None = None  # name -> inode, once listed
    ends: list[int] = field(default_factory=list)  # files: end offset of each known chunk


def _dir_entry(name: bytes, mtime_ns: int, subtree: BlobId | None) -> TreeEntry:
    return TreeEntry(name, EntryType.DIR, 0o555, mtime_ns, subtree=subtree)


class SnapshotFS(pyfuse3.Operations):
    def __init__(self, source: SnapshotSource, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._source = source
        self._clock = clock
        self._uid, self._gid = os.getuid(), os.getgid()
        self._nodes: dict[int, _Node] = {
            ROOT: _Node(_dir_entry(b"", time.time_ns(), None), children={}),
            LATEST_INODE: _Node(TreeEntry(LATEST, EntryType.SYMLINK, 0o777, 0)),
        }
        self._next_inode = LATEST_INODE + 1
        self._snapshot_inodes: dict[BlobId, int] = {}
        self._listed_at: float | None = None
        self._dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self._next_handle = 1
        self._chunks = ChunkLRU()
        self._lock = trio.Lock()  # one repository call at a time

    # ------------------------------------------------------------ state

    def _allocate(self, node: _Node) -> int:
        inode = self._next_inode
        self._next_inode += 1
        self._nodes[inode] = node
        return inode

    def set_snapshots(self, snaps: list[Snapshot]) -> None:
        """Make the root show these snapshots (oldest first) and `latest` the newest."""
        root = self._nodes[ROOT]
        children: dict[bytes, int] = {}
        name = b""
        for snap in snaps:
            inode = self._snapshot_inodes.get(snap.id)
            name = snapshot_dir_name(snap)
            if name in children:  # same second, same short ID: tell them apart in full
                name = snapshot_dir_name(snap, full_id=True)
            if inode is None:
                entry = _dir_entry(name, snap.commit.time_ns, snap.commit.tree)
                inode = self._snapshot_inodes[snap.id] = self._allocate(_Node(entry))
            children[name] = inode
        if snaps:  # `name` is the newest's
            latest = TreeEntry(LATEST, EntryType.SYMLINK, 0o777, snaps[-1].commit.time_ns)
            self._nodes[LATEST_INODE].entry = _with_target(latest, name)
            children[LATEST] = LATEST_INODE
        root.children = children
        self._listed_at = self._clock()

    def _node(self, inode: int) -> _Node:
        node = self._nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        e = self._node(inode).entry
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        kind = {EntryType.FILE: stat.S_IFREG, EntryType.DIR: stat.S_IFDIR}
        a.st_mode = kind.get(e.type, stat.S_IFLNK) | (e.mode & 0o7777)
        a.st_nlink = 2 if e.type is EntryType.DIR else 1
        a.st_size = e.size if e.type is EntryType.FILE else len(e.target)
        a.st_blocks = (a.st_size + 511) // 512
        a.st_blksize = 128 * 1024
        a.st_uid, a.st_gid = self._uid, self._gid
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = e.mtime_ns
        moving = inode in (ROOT, LATEST_INODE)
        a.attr_timeout = a.entry_timeout = ROOT_TIMEOUT if moving else STABLE_TIMEOUT
        return a

    # ------------------------------------------------------------ blocking calls

    async def _blocking(self, fn: Callable[[], T], what: str) -> T:
        """Run a repository call in a worker thread; its failure is EIO, logged."""
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(fn)
            except AnySyncError as exc:
                log.warning("cannot read %s: %s", what, exc.message)
                raise pyfuse3.FUSEError(errno.EIO) from None

    async def _refresh_root(self) -> None:
        if self._listed_at is not None and self._clock() - self._listed_at < REFRESH:
            return
        try:
            snaps = await self._blocking(self._source.snapshots, "the snapshot list")
        except pyfuse3.FUSEError:
            self._listed_at = self._clock()  # keep showing the last list; ask again later
            return
        self.set_snapshots(snaps)

    async def _children(self, inode: int) -> dict[bytes, int]:
        node = self._node(inode)
        if node.children is not None:
            return node.children
        e = node.entry
        if e.type is not EntryType.DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        subtree = e.subtree
        assert subtree is not None  # every directory below the root has a tree
        entries = await self._blocking(lambda: self._source.load_tree(subtree), e.display_name)
        if node.children is None:  # not listed by a call that ran while this one waited
            node.children = {c.name: self._allocate(_Node(c, ends=known_ends(c))) for c in entries}
        return node.children

    async def _load_chunks(self, ids: Sequence[BlobId], what: str) -> list[bytes]:
        missing = [c for c in dict.fromkeys(ids) if self._chunks.get(c) is None]
        if missing:
            got = await self._blocking(lambda: _all_or_raise(self._source, missing), what)
            for bid in missing:
                self._chunks.put(bid, got[bid])
        else:
            got = {}
        out: list[bytes] = []
        for c in ids:
            data = self._chunks.get(c)
            out.append(data if data is not None else got[c])
        return out

    # ------------------------------------------------------------ FUSE requests

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        children = await self._children(parent_inode)
        if name not in children and parent_inode == ROOT:
            await self._refresh_root()
            children = await self._children(parent_inode)
        inode = children.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(inode)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(inode)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        e = self._node(inode).entry
        if e.type is not EntryType.SYMLINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return e.target

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode == ROOT:
            await self._refresh_root()
        listing = sorted((await self._children(inode)).items())
        handle = self._next_handle
        self._next_handle += 1
        self._dir_handles[handle] = listing
        return handle

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dir_handles.get(fh, [])
        for index in range(start_id, len(listing)):
            name, inode = listing[index]
            if not pyfuse3.readdir_reply(token, name, self._attributes(inode), index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        e = self._node(inode).entry
        if e.type is not EntryType.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR if e.type is EntryType.DIR else errno.EINVAL)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        # Snapshot content never changes: the kernel may keep its pages across opens.
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        node = self._node(fh)
        e, ends = node.entry, node.ends
        end = min(off + size, e.size)
        if off >= end:
            return b""
        # Sizes not recorded (an older tree): fetch chunks in order until `end` is covered.
        while (not ends or ends[-1] < end) and len(ends) < len(e.chunks):
            batch = e.chunks[len(ends) : len(ends) + LEARN_BATCH]
            for data in await self._load_chunks(batch, e.display_name):
                ends.append((ends[-1] if ends else 0) + len(data))
        end = min(end, ends[-1] if ends else 0)  # chunks shorter than the recorded size
        if off >= end:
            return b""
        span = chunk_span(ends, off, end)
        datas = await self._load_chunks([e.chunks[i] for i in span], e.display_name)
        for i, data in zip(span, datas, strict=True):
            if len(data) != ends[i] - (ends[i - 1] if i else 0):
                log.warning("cannot read %s: a chunk has another size than recorded", e.name)
                raise pyfuse3.FUSEError(errno.EIO)
        base = ends[span[0] - 1] if span[0] else 0
        return b"".join(datas)[off - base : end - base]

    async def release(self, fh: int) -> None:
        pass

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 512
        s.f_namemax = 1024  # tree.check_name's limit
        return s


def _with_target(entry: TreeEntry, target: bytes) -> TreeEntry:
    return TreeEntry(entry.name, entry.type, entry.mode, entry.mtime_ns, target=target)


def _all_or_raise(source: SnapshotSource, ids: Sequence[BlobId]) -> dict[BlobId, bytes]:
    got = source.load_chunks(ids)
    out: dict[BlobId, bytes] = {}
    for bid in ids:
        data = got.get(bid)
        if isinstance(data, AnySyncError):
            raise data
        if data is None:
            raise AnySyncError(f"chunk {bid.short()} was not returned")
        out[bid] = data
    return out


# ---------------------------------------------------------------- serving


def serve(
    source: SnapshotSource,
    mountpoint: Path,
    on_mounted: Callable[[], None] = lambda: None,
) -> None:
    """List the snapshots, mount, call `on_mounted`, and serve until unmounted
    (`fusermount3 -u`) or told to stop (SIGINT, SIGTERM, SIGHUP); then unmount."""
    fs = SnapshotFS(source)
    fs.set_snapshots(source.snapshots())
    try:
        pyfuse3.init(fs, str(mountpoint), MOUNT_OPTIONS)
    except RuntimeError as exc:
        raise MountError(f"cannot mount at {mountpoint}: {exc}") from None
    stopped = True
    try:
        on_mounted()
        stopped = trio.run(_serve_until_stopped)
    finally:
        # After `fusermount3 -u` the kernel has unmounted already; after a signal (or a
        # crash) the mount is still there and must go.
        pyfuse3.close(unmount=stopped)


async def _serve_until_stopped() -> bool:
    """Serve; True when a signal ended it (still mounted), False after an unmount."""
    stopped = False

    async def stop_on_signal() -> None:
        nonlocal stopped
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for _ in signals:
                stopped = True
                pyfuse3.terminate()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()
    return stopped
