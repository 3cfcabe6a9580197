"""The FUSE file system of a drive: pyfuse3 low-level operations over the namespace,
the content reader and the working copies. The only module (with daemon.py) that
knows FUSE.

Inode numbers are given per path and kept while the daemon runs, except that a file a
new head changed gets a new one (`renumber`: the kernel caches pages per inode, and an
open handle keeps reading the version it opened). A change is a durable row in meta.db
before the operation returns; the committer (daemon.py) turns rows into commits.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import pyfuse3
import trio

from anysync.client.drive import scanners
from anysync.client.drive.content import WINDOW, FetchFailed
from anysync.client.drive.meta import Change
from anysync.client.drive.namespace import Listing, NeedTree, is_under, join, name_of, parent_of
from anysync.client.repo.tree import EntryType, TreeEntry

if TYPE_CHECKING:
    from anysync.client.drive.daemon import Drive

log = logging.getLogger(__name__)
T = TypeVar("T")

GONE = b"\0gone"  # the path of an inode whose name was deleted or replaced
TIMEOUT = 60.0  # seconds the kernel may cache entries and attributes (a head change invalidates)


class Inodes:
    def __init__(self) -> None:
        self.path_of: dict[int, bytes] = {pyfuse3.ROOT_INODE: b""}
        self.ino_of: dict[bytes, int] = {b"": pyfuse3.ROOT_INODE}
        self._next = pyfuse3.ROOT_INODE + 1

    def of(self, path: bytes) -> int:
        ino = self.ino_of.get(path)
        if ino is None:
            ino = self.ino_of[path] = self._next
            self.path_of[ino] = path
            self._next += 1
        return ino

    def path(self, ino: int) -> bytes:
        try:
            return self.path_of[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def moved(self, old: bytes, new: bytes) -> None:
        """`old` (and everything under it) is now `new`: the inodes follow."""
        for p in [p for p in self.ino_of if p == old or is_under(p, old)]:
            ino = self.ino_of.pop(p)
            q = new + p[len(old) :]
            self.ino_of.pop(q, None)
            self.ino_of[q] = ino
            self.path_of[ino] = q

    def renumber(self, path: bytes) -> None:
        """A new inode for `path`; the old one still answers for open handles."""
        ino = self.ino_of[path] = self._next
        self.path_of[ino] = path
        self._next += 1

    def gone(self, path: bytes) -> None:
        ino = self.ino_of.pop(path, None)
        if ino is not None:
            self.path_of[ino] = GONE  # an open file's inode outlives its name


@dataclass
class Handle:
    path: bytes
    entry: TreeEntry  # as opened: a reader keeps its version when the head moves
    dirty: int | None = None  # the working copy, when reads and writes go there
    fd: int | None = None
    writable: bool = False
    last_end: int = 0  # sequential reads start where the last one ended
    ahead: int = WINDOW  # read-ahead was asked for up to here (open asks for the first window)
    ino: int = 0  # the inode it was opened by


HANDLERS = (
    "lookup", "getattr", "setattr", "readlink", "mkdir", "symlink", "unlink", "rmdir",
    "rename", "open", "create", "read", "write", "fsync", "flush", "release", "opendir",
    "readdir", "releasedir", "statfs",
)  # fmt: skip
# No xattr handler: the base class answers ENOSYS and the kernel stops asking, which
# `ls -l` would do for every file (control.py says why the CLI uses a socket instead).


def _guarded(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """pyfuse3 lets a handler raise only FUSEError (anything else ends the daemon and
    strands the mount): errors become an errno, and a bug is logged and answers EIO."""

    @functools.wraps(handler)
    async def run(*args: Any) -> Any:
        try:
            return await handler(*args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:  # the cache's disk: full, failing
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except sqlite3.OperationalError as exc:
            log.error("the drive state cannot be written: %s", exc)
            raise pyfuse3.FUSEError(errno.ENOSPC if "full" in str(exc) else errno.EIO) from None
        except Exception:
            log.exception("the drive operation %s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return run


class DriveOps(pyfuse3.Operations):
    def __init__(self, drive: Drive) -> None:
        super().__init__()
        for name in HANDLERS:
            setattr(self, name, _guarded(getattr(self, name)))
        self.drive = drive
        self.ns = drive.ns
        self.inodes = Inodes()
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, Listing] = {}
        self._next_fh = 1
        self.uid, self.gid = os.getuid(), os.getgid()
        self.scanners_seen: set[str] = set()
        self._making: dict[bytes, trio.Lock] = {}  # paths whose working copy is being made

    # ------------------------------------------------------------------ helpers

    async def entry(self, path: bytes) -> TreeEntry | None:
        while True:
            try:
                return self.ns.entry(path)
            except NeedTree as need:
                await self.drive.fetch_tree(need.tree_id)

    async def listing(self, path: bytes) -> Listing | None:
        while True:
            try:
                return self.ns.listing(path)
            except NeedTree as need:
                await self.drive.fetch_tree(need.tree_id)

    async def _planned(self, plan: Callable[[], T]) -> T:
        """A namespace plan, once the trees it looks at are here."""
        while True:
            try:
                return plan()
            except NeedTree as need:
                await self.drive.fetch_tree(need.tree_id)

    async def existing(self, path: bytes) -> TreeEntry:
        e = await self.entry(path)
        if e is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return e

    def attrs(
        self, path: bytes, e: TreeEntry, handle: Handle | None = None
    ) -> pyfuse3.EntryAttributes:
        """A path's attributes; with `handle`, those of an open file whose name is gone
        (deleted or replaced while open: fstat must still answer)."""
        a = pyfuse3.EntryAttributes()
        a.st_ino = handle.ino if handle is not None else self.inodes.of(path)
        a.entry_timeout = a.attr_timeout = TIMEOUT
        size, mtime = e.size, e.mtime_ns
        if e.type is EntryType.DIR:
            a.st_mode = stat.S_IFDIR | (e.mode & 0o7777 or 0o755)
            a.st_nlink = 2
        elif e.type is EntryType.SYMLINK:
            a.st_mode = stat.S_IFLNK | 0o777
            size = len(e.target)
            a.st_nlink = 1
        else:
            a.st_mode = stat.S_IFREG | (e.mode & 0o7777)
            a.st_nlink = 0 if handle is not None else 1
            row = self.ns.changes.get(path) if handle is None else None
            st = None
            if handle is not None and handle.fd is not None:
                st = os.fstat(handle.fd)
            elif row is not None and row.dirty is not None:
                st = os.stat(self.drive.dirty_path(row.dirty))
            if st is not None:
                size, mtime = st.st_size, st.st_mtime_ns
        a.st_size = size
        a.st_blksize = 128 * 1024
        a.st_blocks = (size + 511) // 512  # the full size: "all holes" would read as zeros
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = mtime
        a.st_uid, a.st_gid = self.uid, self.gid
        return a

    def _fh(self, h: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = h
        return fh

    async def _write_rows(self, put: dict[bytes, Change], drop: list[bytes] | None = None) -> None:
        self.drive.write_rows(put, drop or [])

    async def _child(self, parent_inode: int, name: bytes) -> bytes:
        parent = self.inodes.path(parent_inode)
        e = await self.existing(parent)
        if e.type is not EntryType.DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if len(name) > 255:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        return join(parent, name)

    # ------------------------------------------------------------------ metadata

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = await self._child(parent_inode, name)
        return self.attrs(path, await self.existing(path))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        if path == GONE:
            h = next((h for h in self.handles.values() if h.ino == inode), None)
            if h is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self.attrs(h.path, h.entry, handle=h)
        return self.attrs(path, await self.existing(path))

    async def forget(self, inode_list: object) -> None:
        pass  # inodes stay for the daemon's life: bounded by the paths ever looked at

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        e = await self.existing(self.inodes.path(inode))
        if e.type is not EntryType.SYMLINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return e.target

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self.inodes.path(inode)
        listing = await self.listing(path)
        if listing is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        self.dirs[fh] = listing  # offsets stay valid while the directory changes
        self.handles[fh] = Handle(path, self.ns.root())
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing, path = self.dirs[fh], self.handles[fh].path
        for i in range(start_id, len(listing.names)):
            name = listing.names[i]
            child = join(path, name)
            if not pyfuse3.readdir_reply(
                token, name, self.attrs(child, listing.entries[name]), i + 1
            ):
                return

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)
        self.handles.pop(fh, None)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.drive.root)
        s = pyfuse3.StatvfsData()
        s.f_bsize, s.f_frsize = st.f_bsize, st.f_frsize
        s.f_blocks, s.f_bfree, s.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
        s.f_files, s.f_ffree, s.f_favail = st.f_files, st.f_ffree, st.f_favail
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------------ changes

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = await self._child(parent_inode, name)
        if await self.entry(path) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        e = TreeEntry(name, EntryType.DIR, mode & 0o7777 & ~ctx.umask, time.time_ns())
        await self._write_rows(await self._planned(lambda: self.ns.plan_put(path, e)))
        return self.attrs(path, e)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = await self._child(parent_inode, name)
        if await self.entry(path) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        e = TreeEntry(name, EntryType.SYMLINK, 0o777, time.time_ns(), target=target)
        await self._write_rows(await self._planned(lambda: self.ns.plan_put(path, e)))
        return self.attrs(path, e)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = await self._child(parent_inode, name)
        e = await self.existing(path)
        if e.type is EntryType.DIR:
            raise pyfuse3.FUSEError(errno.EISDIR)
        row = self.ns.changes.get(path)
        if row is not None and row.dirty is not None and not self.drive.writers[row.dirty]:
            # The working copy goes first: on a full disk, deleting must make room for
            # the row that records it (a row whose working copy is gone is a delete).
            self.drive.dirty_path(row.dirty).unlink(missing_ok=True)
        put, drop = await self._planned(lambda: self.ns.plan_remove(path))
        await self._write_rows(put, drop)
        self.inodes.gone(path)
        if row is not None and row.dirty is not None:
            self.drive.discard_dirty(row.dirty)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = await self._child(parent_inode, name)
        e = await self.existing(path)
        if e.type is not EntryType.DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        listing = await self.listing(path)
        if listing is not None and listing.names:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        put, drop = await self._planned(lambda: self.ns.plan_remove(path))
        await self._write_rows(put, drop)
        self.inodes.gone(path)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old = await self._child(parent_inode_old, name_old)
        new = await self._child(parent_inode_new, name_new)
        moving = await self.existing(old)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if old == new:
            return
        if is_under(new, old):
            raise pyfuse3.FUSEError(errno.EINVAL)
        target = await self.entry(new)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if target.type is EntryType.DIR:
                if moving.type is not EntryType.DIR:
                    raise pyfuse3.FUSEError(errno.EISDIR)
                listing = await self.listing(new)
                if listing is not None and listing.names:
                    raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            elif moving.type is EntryType.DIR:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
        replaced = self.ns.changes.get(new)
        put, drop = await self._planned(lambda: self.ns.plan_rename(old, new))
        await self._write_rows(put, drop)
        self.inodes.gone(new)
        self.inodes.moved(old, new)
        for h in self.handles.values():
            if h.path == old or is_under(h.path, old):
                h.path = new + h.path[len(old) :]
        if replaced is not None and replaced.dirty is not None:
            self.drive.discard_dirty(replaced.dirty)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        e = await self.existing(path)
        if fields.update_size:
            if e.type is not EntryType.FILE:
                raise pyfuse3.FUSEError(errno.EINVAL)
            dirty = await self.make_dirty(path, e, keep=attr.st_size > 0, pid=ctx.pid)
            os.truncate(self.drive.dirty_path(dirty), attr.st_size)
            self.drive.wrote(dirty)
            e = await self.existing(path)
        if fields.update_mode or fields.update_mtime:
            mode = attr.st_mode & 0o7777 if fields.update_mode else e.mode
            mtime = attr.st_mtime_ns if fields.update_mtime else e.mtime_ns
            row = self.ns.changes.get(path)
            working = row.dirty if row is not None else None
            if working is not None and fields.update_mtime:
                os.utime(self.drive.dirty_path(working), ns=(mtime, mtime))
            if e.type is not EntryType.SYMLINK:
                e = replace(e, mode=mode, mtime_ns=mtime)
                await self._write_rows(
                    await self._planned(lambda: self.ns.plan_put(path, e, working))
                )
        return self.attrs(path, e)

    # ------------------------------------------------------------------ content

    async def make_dirty(self, path: bytes, e: TreeEntry, keep: bool, pid: int) -> int:
        """The file's working copy (made now: a copy of its content, or empty). One at
        a time per path: two opens racing would make two copies, and one would lose
        its writes."""
        lock = self._making.setdefault(path, trio.Lock())
        try:
            async with lock:
                return await self._make_dirty(path, e, keep, pid)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._making.pop(path, None)

    async def _make_dirty(self, path: bytes, e: TreeEntry, keep: bool, pid: int) -> int:
        row = self.ns.changes.get(path)
        if row is not None and row.dirty is not None:
            return row.dirty
        dirty = self.drive.new_dirty()
        if keep and e.chunks:
            self.drive.content.open_chunks.update(e.chunks)  # not evicted meanwhile
            try:
                await self.hydrate(e, pid)
                await self.drive.materialize(dirty, e)
            finally:
                self.drive.content.open_chunks.subtract(e.chunks)
        else:
            self.drive.dirty_path(dirty).touch(mode=0o600)
        await self._write_rows(await self._planned(lambda: self.ns.plan_put(path, e, dirty)))
        return dirty

    async def hydrate(self, e: TreeEntry, pid: int) -> None:
        """Every chunk of the file cached, unless an indexer is asking (EIO), or the
        server cannot be reached in time (EIO)."""
        if all(self.drive.cache.has(c) for c in e.chunks):
            return
        self.refuse_scanner(pid)
        try:
            await self.drive.content.ensure(list(e.chunks))
        except FetchFailed as exc:
            log.warning("cannot open %s: %s", e.display_name, exc.why)
            raise pyfuse3.FUSEError(errno.EIO) from None

    def refuse_scanner(self, pid: int) -> None:
        who = scanners.scanner_name(pid, self.drive.scanner_patterns)
        if who is not None:
            if who not in self.scanners_seen:
                self.scanners_seen.add(who)
                log.warning("refusing to download file content for the indexer %s", who)
            raise pyfuse3.FUSEError(errno.EIO)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self.inodes.path(inode)
        e = await self.existing(path)
        if e.type is EntryType.DIR:
            raise pyfuse3.FUSEError(errno.EISDIR)
        writing = flags & (os.O_WRONLY | os.O_RDWR) != 0
        row = self.ns.changes.get(path)
        if writing or flags & os.O_TRUNC:
            dirty = await self.make_dirty(path, e, keep=not flags & os.O_TRUNC, pid=ctx.pid)
            fd = os.open(self.drive.dirty_path(dirty), os.O_RDWR)
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
                self.drive.wrote(dirty)
            self.drive.opened_for_write(dirty, +1)
            return pyfuse3.FileInfo(fh=self._fh(Handle(path, e, dirty, fd, True, ino=inode)))
        if row is not None and row.dirty is not None:
            fd = os.open(self.drive.dirty_path(row.dirty), os.O_RDONLY)
            return pyfuse3.FileInfo(fh=self._fh(Handle(path, e, row.dirty, fd, ino=inode)))
        if e.chunks and not all(self.drive.cache.has(c) for c in e.chunks):
            self.refuse_scanner(ctx.pid)
            self.drive.prefetch(e, 0, first_alone=True)
        self.drive.content.open_chunks.update(e.chunks)
        return pyfuse3.FileInfo(fh=self._fh(Handle(path, e, ino=inode)), keep_cache=True)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = await self._child(parent_inode, name)
        if await self.entry(path) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        e = TreeEntry(name, EntryType.FILE, mode & 0o7777 & ~ctx.umask, time.time_ns())
        dirty = await self.make_dirty(path, e, keep=False, pid=ctx.pid)
        fd = os.open(self.drive.dirty_path(dirty), os.O_RDWR)
        self.drive.opened_for_write(dirty, +1)
        fh = self._fh(Handle(path, e, dirty, fd, True, ino=self.inodes.of(path)))
        return pyfuse3.FileInfo(fh=fh), self.attrs(path, e)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        if h.fd is not None:
            return os.pread(h.fd, size, off)
        try:
            data = await self.drive.content.read(h.entry, off, size)
        except FetchFailed as exc:
            log.warning("cannot read %s: %s", h.entry.display_name, exc.why)
            raise pyfuse3.FUSEError(errno.EIO) from None
        end = off + len(data)
        if off == h.last_end and end + WINDOW > h.ahead:  # sequential: keep 1-2 windows ahead
            self.drive.prefetch(h.entry, max(end, h.ahead))
            h.ahead = max(end, h.ahead) + WINDOW
        h.last_end = end
        return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handles[fh]
        if h.fd is None or h.dirty is None or not h.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        try:
            n = os.pwrite(h.fd, buf, off)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        self.drive.wrote(h.dirty)
        return n

    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self.handles[fh]
        if h.fd is not None:
            await trio.to_thread.run_sync(os.fsync, h.fd)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh)
        if h.fd is not None:
            os.close(h.fd)
        if h.writable and h.dirty is not None:
            self.drive.opened_for_write(h.dirty, -1)
        elif h.fd is None:
            self.drive.content.open_chunks.subtract(h.entry.chunks)

    # ------------------------------------------------------------------ head changes

    def renumber(self, changed: list[bytes]) -> list[tuple[int | None, bytes, int | None]]:
        """A new head: changed files get new inode numbers, because the kernel caches
        pages per inode and a reader that opened the old version must go on reading
        it (its handle keeps the old chunks). Returns what the kernel must forget:
        (parent inode, name, old inode)."""
        out = []
        for path in changed:
            old = self.inodes.ino_of.get(path)
            if old is not None and not self._is_dir(path):
                self.inodes.renumber(path)
            out.append((self.inodes.ino_of.get(parent_of(path)), name_of(path), old))
        return out

    def _is_dir(self, path: bytes) -> bool:
        try:
            e = self.ns.entry(path)
        except NeedTree:
            return False
        return e is not None and e.type is EntryType.DIR


def invalidate(stale: list[tuple[int | None, bytes, int | None]]) -> None:
    """Tell the kernel (from a worker thread: these calls may block on it)."""
    for parent, name, ino in stale:
        if parent is not None:
            pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
        if ino is not None:
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(ino)  # the kernel did not know it
