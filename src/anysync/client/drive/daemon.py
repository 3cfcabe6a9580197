"""The drive daemon: one trio loop serving FUSE, plus three background tasks.

- the committer: a sync pass (commit.py) a few seconds after the last change is
  closed (QUIET; at most MAX_DELAY after the first), when the server reports a new
  head, on `drive flush`, and every POLL_EVERY as a safety net;
- the evictor: keeps the chunk cache under its budget (evict.py), every EVICT_EVERY and
  after fetches; pinned and open files' chunks are never chosen, and working copies
  are not in the cache at all;
- pin hydration: a pinned sub-tree is downloaded now, and again when the head changes.

Blocking work (network, chunking, SQLite commits of a pass) runs in worker threads;
the namespace and the change rows are only touched on the loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pyfuse3
import trio

from anysync import faults
from anysync.client.chunker import Chunker
from anysync.client.drive import commit, control, evict, fuseops, scanners
from anysync.client.drive.cache import ChunkCache
from anysync.client.drive.content import Content, FetchFailed
from anysync.client.drive.fuseops import DriveOps
from anysync.client.drive.meta import Change, DriveMeta, Head
from anysync.client.drive.namespace import Namespace, TreeCache, is_under, join
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync import engine
from anysync.client.sync.watch import RefSource
from anysync.errors import AnySyncError, ServerUnreachable
from anysync.types import BlobId

log = logging.getLogger(__name__)

QUIET = 2.0  # seconds after the last change before a commit pass
MAX_DELAY = 10.0  # ...but a stream of changes is committed at least this often
POLL_EVERY = 300.0  # a pass even without news (a missed WatchRefs event)
EVICT_EVERY = 30.0
RETRY_OFFLINE = 5.0
PIECE = 4 * 1024 * 1024  # bytes per read-ahead fetch; FETCHES of them run at once


@dataclass
class Settings:
    name: str  # the sync folder's name
    ref: str
    mountpoint: Path
    cache_size: int
    min_free: int
    offline_timeout: float = 10.0
    scanner_patterns: tuple[str, ...] = scanners.DEFAULT_SCANNERS


class Drive:
    def __init__(
        self,
        root: Path,
        settings: Settings,
        reader: Repository,
        writer: Repository,
        book: RefBook,
        remote: RefSource,
        device: engine.Device,
    ) -> None:
        self.root = root
        self.settings = settings
        self.scanner_patterns = settings.scanner_patterns
        self.writer, self.book, self.remote, self.device = writer, book, remote, device
        self.meta = DriveMeta(root / "meta.db")
        self.cache = ChunkCache(root / "chunks", durable=False)  # checked at use instead
        self.trees = TreeCache(root / "trees")
        self.dirty_dir = root / "dirty"
        self.dirty_dir.mkdir(mode=0o700, exist_ok=True)
        self.content = Content(reader, self.cache, settings.offline_timeout)
        self.content.on_fetched = self._evict_soon
        self.content.on_full = self.make_room
        self._evicting = False
        self.fetcher = commit.Trees(reader, self.trees)
        self.head = self.meta.head()
        self.ns = Namespace(self.trees, self.head.tree_id, self.meta.changes())
        self.pins = self.meta.pins()
        self.chunker = Chunker(writer.keys.chunker_seed())
        # No grace: the chunks of open files (read-ahead included) are protected anyway.
        self.budget = evict.Budget(settings.cache_size, settings.min_free, grace=0.0)
        self.ops = DriveOps(self)
        self.writers: Counter[int] = Counter()  # working copies open for write
        self.generation: Counter[int] = Counter()  # bumped by every write to a working copy
        self.first_change: float | None = time.monotonic() if self.ns.changes else None
        self.last_change = 0.0
        self.remote_news = True  # the first pass catches up with the server
        self.online = True
        self.last_error: str | None = None
        self.commits = 0
        self.passes = 0
        self._flushes: list[trio.Event] = []
        self._pinned_chunks: set[BlobId] = set()
        self._nursery: trio.Nursery | None = None
        self._stop = threading.Event()
        self._terminated = False
        self.unmounted = False
        self._token: trio.lowlevel.TrioToken | None = None

    # ------------------------------------------------------------------ serving

    async def run(self, ready: Callable[[], None]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._committer)
            nursery.start_soon(self._evictor)
            nursery.start_soon(self._hydrate_pins)
            threading.Thread(target=self._watch, name="watch-refs", daemon=True).start()
            nursery.start_soon(self._on_signals)
            await nursery.start(control.serve, self, self.root)  # listening before ready()
            ready()
            await pyfuse3.main()  # returns once unmounted (fusermount3 -u) or terminated
            self.unmounted = not self._terminated
            self._stop.set()
            nursery.cancel_scope.cancel()

    async def _on_signals(self) -> None:
        """SIGTERM or Ctrl-C: commit what can be, then stop serving."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                with trio.move_on_after(30):
                    await self.flush()
                self._terminated = True
                pyfuse3.terminate()
                return

    def dirty_path(self, dirty: int) -> Path:
        return self.dirty_dir / str(dirty)

    def new_dirty(self) -> int:
        return self.meta.next_dirty()

    def write_rows(self, put: dict[bytes, Change], drop: list[bytes]) -> None:
        """A change, durable first, then visible; the committer is told."""
        stored = self.meta.write(put, drop)
        self.ns.apply(stored, drop)
        self._changed()

    def _changed(self) -> None:
        now = time.monotonic()
        self.last_change = now
        if self.first_change is None:
            self.first_change = now

    def wrote(self, dirty: int) -> None:
        self.generation[dirty] += 1
        self._changed()

    def opened_for_write(self, dirty: int, delta: int) -> None:
        self.writers[dirty] += delta
        if self.writers[dirty] <= 0:
            del self.writers[dirty]
            self._changed()

    def discard_dirty(self, dirty: int) -> None:
        if not self.writers[dirty] and not any(c.dirty == dirty for c in self.ns.changes.values()):
            self.dirty_path(dirty).unlink(missing_ok=True)

    async def materialize(self, dirty: int, e: TreeEntry) -> None:
        """A working copy with the file's content (its chunks are cached), on disk
        before its row: a crash must not leave a row naming a torn copy, which the
        next pass would commit as the file's new content."""
        path = self.dirty_path(dirty)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            for c in e.chunks:
                data = await self.content.whole(c)
                await trio.to_thread.run_sync(_write_all, fd, data)
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)

    async def fetch_tree(self, tree_id: BlobId) -> None:
        try:
            await trio.to_thread.run_sync(self.fetcher.ensure, [tree_id])
        except AnySyncError as exc:
            log.warning("cannot list a directory: %s", exc.message)
            raise pyfuse3.FUSEError(errno.EIO) from None

    def prefetch(self, e: TreeEntry, offset: int, first_alone: bool = False) -> None:
        """Read ahead: the next window of a file, in the background, in pieces of
        about PIECE bytes fetched side by side (network and decryption overlap). At
        open, the first chunk goes alone and first: the first read waits for it only."""
        ids = [c for c in self.content.window(e, offset) if not self.cache.has(c)]
        if not ids or self._nursery is None:
            return
        first, ids = (ids[:1], ids[1:]) if first_alone else ([], ids)
        sizes = dict(zip(e.chunks, e.chunk_sizes, strict=True)) if e.chunk_sizes else {}
        pieces, piece, held = [], list[BlobId](), 0
        for c in ids:
            piece.append(c)
            held += sizes.get(c, 1 << 20)
            if held >= PIECE:
                pieces.append(piece)
                piece, held = [], 0
        self._nursery.start_soon(self._read_ahead, first, [*pieces, piece] if piece else pieces)

    async def _read_ahead(self, first: list[BlobId], pieces: list[list[BlobId]]) -> None:
        await self._quietly_ensure(first)
        rest = [c for p in pieces for c in p]
        with contextlib.suppress(AnySyncError):  # one FindBlobs for the window; else per piece
            await trio.to_thread.run_sync(self.content.repo.locate, rest)
        for p in pieces:
            assert self._nursery is not None
            self._nursery.start_soon(self._quietly_ensure, p)

    async def _quietly_ensure(self, ids: list[BlobId]) -> None:
        if not ids:
            return
        with contextlib.suppress(FetchFailed):  # the read that needs it reports the error
            await self.content.ensure(ids)

    # ------------------------------------------------------------------ state

    async def existing(self, path: bytes) -> bytes:
        if await self._entry(path) is None:
            raise control.ControlError("not-found", "no such file in the drive")
        return path

    async def _entry(self, path: bytes) -> TreeEntry | None:
        try:
            return await self.ops.entry(path)
        except pyfuse3.FUSEError:
            raise control.ControlError("unavailable", "cannot list it (offline?)") from None

    async def state_at(self, path: bytes) -> str:
        e = await self._entry(path)
        return self.state_of(path, e) if e is not None else "missing"

    def pinned(self, path: bytes) -> bool:
        return any(path == p or is_under(path, p) for p in self.pins)

    def state_of(self, path: bytes, e: TreeEntry) -> str:
        row = self.ns.changes.get(path)
        if row is not None and row.dirty is not None:
            return "dirty"
        pinned = self.pinned(path)
        if e.type is not EntryType.FILE:
            return "pinned" if pinned else "online"
        have = self.content.cached(e)
        if have == len(e.chunks):
            return "pinned" if pinned else "cached"
        return "partial" if have else "online"

    def status(self) -> dict[str, object]:
        return {
            "name": self.settings.name,
            "mountpoint": str(self.settings.mountpoint),
            "online": self.online,
            "head": self.head.counter,
            "cache_used": self.cache.usage(),
            "cache_limit": self.budget.limit,
            "min_free": self.budget.min_free,
            "pending_changes": len(self.ns.changes),
            "dirty_files": len({c.dirty for c in self.ns.changes.values() if c.dirty is not None}),
            "open_for_write": len(self.writers),
            "pins": sorted(p.decode("utf-8", "surrogateescape") for p in self.pins),
            "fetched_bytes": self.content.fetched_bytes,
            "commits": self.commits,
            "passes": self.passes,
            "last_error": self.last_error,
            # Indexers refused uncached content (README: keep them out of the drive).
            "refused_indexers": sorted(self.ops.scanners_seen),
        }

    # ------------------------------------------------------------------ committing

    async def flush(self) -> bool:
        """Commit every closed change now; False when they could not be (offline)."""
        done = trio.Event()
        self._flushes.append(done)
        self.remote_news = True
        await done.wait()
        return not any(c for p, c in self.ns.changes.items() if c.dirty not in self.writers)

    def _due(self, now: float, last_pass: float) -> bool:
        if self._flushes or self.remote_news or now - last_pass >= POLL_EVERY:
            return True
        if self.first_change is None:
            return False
        if not self.online and now - last_pass < RETRY_OFFLINE:
            return False
        return now - self.last_change >= QUIET or now - self.first_change >= MAX_DELAY

    async def _committer(self) -> None:
        last_pass = time.monotonic()
        while True:
            await trio.sleep(0.1)
            now = time.monotonic()
            if not self._due(now, last_pass):
                continue
            flushes, self._flushes = self._flushes, []
            self.remote_news = False
            last_pass = now
            await self._one_pass()
            self.passes += 1
            for done in flushes:
                done.set()

    async def _one_pass(self) -> None:
        rows = {
            p: c for p, c in self.ns.changes.items() if c.dirty is None or not self.writers[c.dirty]
        }
        generations = {c.dirty: self.generation[c.dirty] for c in rows.values() if c.dirty}
        if len(rows) == len(self.ns.changes):
            self.first_change = None
        served = self.head
        try:
            # Abandoned when the daemon stops (unmounted): a pass cut short anywhere is
            # safe (rows leave only after the ref moved), and stopping must not wait on
            # a server that does not answer.
            result = await trio.to_thread.run_sync(self._pass, served, rows, abandon_on_cancel=True)
        except ServerUnreachable as exc:
            self.online = False
            self.last_error = exc.message
            self.first_change = self.first_change or time.monotonic()
            return
        except AnySyncError as exc:
            self.last_error = exc.message
            log.error("drive %s: %s", self.settings.name, exc.message)
            self.first_change = self.first_change or time.monotonic()
            return
        self.online = True
        self.last_error = None
        self._settle(result, rows, generations)

    def _pass(self, served: Head, rows: dict[bytes, Change]) -> commit.PassResult:
        return commit.run_pass(
            self.writer,
            self.book,
            self.fetcher,
            self.cache,
            self.chunker,
            self.dirty_dir,
            self.settings.ref,
            self.settings.name,
            self.device,
            served,
            rows,
        )

    def _settle(
        self, result: commit.PassResult, rows: dict[bytes, Change], generations: dict[int, int]
    ) -> None:
        """The ref moved (or the head changed remotely): drop the rows the new head
        holds, keep those changed since the pass began; a kept row whose path lost a
        conflict follows the local version to its conflict copy."""
        now = self.ns.changes
        held = [
            p
            for p, c in rows.items()
            if p in now
            and now[p].seq == c.seq
            and (c.dirty is None or generations.get(c.dirty) == self.generation[c.dirty])
            and (c.dirty is None or not self.writers[c.dirty])  # opened for write since
        ]
        moved = {  # a conflict copy is new here: it has no base
            p: (copy, replace(now[p], base=None))
            for p, copy in result.conflicts
            if p in now and p not in held
        }
        if result.committed:
            faults.point("drive.ref-moved")
        self.meta.committed(result.head, held, moved)
        dropped = [now[p] for p in held]
        self.head = result.head
        self.ns.set_head(result.head.tree_id)
        self.ns.apply({new: c for new, c in moved.values()}, held + list(moved))
        for c in dropped:
            if c.dirty is not None:
                self.discard_dirty(c.dirty)
        if result.committed:
            self.commits += 1
        changed = result.changed + [c for _, c in result.conflicts]
        if changed and self._nursery is not None:
            self._nursery.start_soon(self._invalidate, self.ops.renumber(changed))
            if any(self.pinned(p) for p in changed):
                self._pinned_chunks.clear()
                self._nursery.start_soon(self._hydrate_pins)

    async def _invalidate(self, stale: list[tuple[int | None, bytes, int | None]]) -> None:
        await trio.to_thread.run_sync(fuseops.invalidate, stale)

    def _watch(self) -> None:
        """WatchRefs in a thread: a new head of our ref wakes the committer."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                stream = self.remote.watch_refs([self.settings.ref])
                for ref in stream:
                    if self._stop.is_set():
                        stream.cancel()
                        return
                    if ref is not None and self._token is not None:
                        trio.from_thread.run_sync(self._news, trio_token=self._token)
                delay = 1.0
            except (AnySyncError, trio.RunFinishedError):
                pass
            self._stop.wait(delay)
            delay = min(delay * 2, 60.0)

    def _news(self) -> None:
        self.remote_news = True

    # ------------------------------------------------------------------ pins and eviction

    async def files_under(self, path: bytes) -> list[TreeEntry]:
        """Every file entry at or under `path` in what the drive shows."""
        out: list[TreeEntry] = []
        todo = [path]
        while todo:
            p = todo.pop()
            e = await self.ops.entry(p)
            if e is None:
                continue
            if e.type is EntryType.FILE:
                row = self.ns.changes.get(p)
                if row is None or row.dirty is None:
                    out.append(e)
            elif e.type is EntryType.DIR:
                listing = await self.ops.listing(p)
                todo += [join(p, n) for n in listing.names] if listing else []
        return out

    async def set_pin(self, path: bytes, pinned: bool) -> None:
        self.meta.set_pin(path, pinned)
        self.pins = self.meta.pins()
        self._pinned_chunks.clear()
        if pinned:
            await self._hydrate(path)

    async def _hydrate(self, path: bytes) -> None:
        batch: list[BlobId] = []
        for e in await self.files_under(path):
            batch += [c for c in e.chunks if not self.cache.has(c)]
            if len(batch) >= 32:
                await self.content.ensure(batch)
                batch = []
        if batch:
            await self.content.ensure(batch)

    async def _hydrate_pins(self) -> None:
        for p in sorted(self.pins):
            try:
                await self._hydrate(p)
            except (FetchFailed, pyfuse3.FUSEError):
                log.warning("could not download the pinned %s yet", p.decode(errors="replace"))

    async def _protected(self) -> set[BlobId]:
        if not self._pinned_chunks and self.pins:
            chunks: set[BlobId] = set()
            for p in self.pins:
                for e in await self.files_under(p):
                    chunks.update(e.chunks)
            self._pinned_chunks = chunks
        return self._pinned_chunks | {c for c, n in self.content.open_chunks.items() if n > 0}

    async def evict(self, path: bytes, unpin: bool) -> None:
        if unpin:
            for p in [p for p in self.pins if p == path or is_under(p, path)]:
                self.meta.set_pin(p, False)
            self.pins = self.meta.pins()
            self._pinned_chunks.clear()
        keep = await self._protected()
        for e in await self.files_under(path):
            for c in e.chunks:
                if c not in keep:
                    self.cache.remove(c)

    def _evict_soon(self) -> None:
        if not self._evicting and self._nursery is not None:
            self._nursery.start_soon(self.evict_to_budget)

    async def _evictor(self) -> None:
        while True:
            await self.evict_to_budget()
            await trio.sleep(EVICT_EVERY)

    async def make_room(self) -> int:
        """The cache's disk is full: evict what is evictable, oldest first, down to
        half of what the cache holds now (a write failed; the budget did not see it)."""
        half = evict.Budget(self.cache.usage() // 2, 0, low_water=1.0, grace=0.0)
        keep = await self._protected()
        now = time.time()
        victims = evict.choose_victims(self.cache.entries(), keep, self.cache.usage(), 0, half, now)
        return sum(self.cache.remove(v) for v in victims)

    async def evict_to_budget(self) -> int:
        free = _free_bytes(self.root)
        usage = self.cache.usage()
        if self._evicting or (usage <= self.budget.limit and free >= self.budget.min_free):
            return 0
        self._evicting = True
        try:
            keep = await self._protected()
            victims = evict.choose_victims(
                self.cache.entries(), keep, usage, free, self.budget, time.time()
            )
            return sum(self.cache.remove(v) for v in victims)
        except pyfuse3.FUSEError:
            return 0  # a pinned directory could not be listed: evict nothing rather than guess
        finally:
            self._evicting = False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def serve(drive: Drive, ready: Callable[[], None]) -> None:
    """Mount and serve until unmounted (or SIGTERM/SIGINT: commit, then unmount).
    A drive that never saw its ref's head loads it first, so the mount shows it."""
    if drive.head.commit_id is None:
        rows = dict(drive.ns.changes)
        drive._settle(drive._pass(drive.head, rows), rows, {})
    options = set(pyfuse3.default_options) | {
        "fsname=anysync",
        "subtype=anysync",
        "default_permissions",
        "nodev",
        "nosuid",
    }
    pyfuse3.init(drive.ops, str(drive.settings.mountpoint), options)
    unmounted = False
    try:
        trio.run(drive.run, ready)
        unmounted = drive.unmounted
    finally:
        pyfuse3.close(unmount=not unmounted)
        drive.meta.close()
