"""File content on demand: a read maps its offset to chunks, fetches only those that
are not cached (each once, however many readers want it), and reads them from the
chunk cache. Every chunk comes through Repository.load_many: ranged pack reads,
coalesced, each blob authenticated before it reaches the cache.

Runs on the daemon's trio loop; the fetch itself runs in a worker thread. While the
server is unreachable a fetch is retried until `offline_timeout`, then fails (the FUSE
layer answers EIO): never zeros, never a hang.
"""

from __future__ import annotations

import bisect
import errno
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import trio

from anysync.client.drive.cache import ChunkCache
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import TreeEntry
from anysync.errors import AnySyncError, ServerUnreachable
from anysync.types import BlobId, BlobKind

log = logging.getLogger(__name__)

WINDOW = 16 * 1024 * 1024  # read-ahead and first-open fetch, in bytes
FETCHES = 4  # fetches in flight at once


class FetchFailed(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Content:
    def __init__(self, repo: Repository, cache: ChunkCache, offline_timeout: float = 10.0) -> None:
        self.repo = repo
        self.cache = cache
        self.offline_timeout = offline_timeout
        self.open_chunks: Counter[BlobId] = Counter()  # chunks of open files: never evicted
        self.fetched_bytes = 0
        self.offline_since: float | None = None
        self._inflight: dict[BlobId, trio.Event] = {}
        self._limiter = trio.CapacityLimiter(FETCHES)
        self._sizes: dict[BlobId, int] = {}  # learnt from chunks of entries without sizes
        self._starts: OrderedDict[int, tuple[TreeEntry, list[int]]] = OrderedDict()
        # Chunks known whole: fetched (authenticated) by this process. A chunk a previous
        # run left is checked against its ID once before use (the cache skips fsync).
        self.verified: set[BlobId] = set()
        self.on_fetched: Callable[[], None] | None = None  # the cache grew: check its budget
        self.on_full: Callable[[], Awaitable[object]] | None = None  # the disk is full: evict

    # ------------------------------------------------------------------ mapping

    def sizes(self, entry: TreeEntry) -> list[int] | None:
        """Each chunk's size, if known (from the tree, or from chunks seen before)."""
        if entry.chunk_sizes:
            return list(entry.chunk_sizes)
        out = []
        for c in entry.chunks:
            size = self._sizes.get(c) or self.cache.size_of(c)
            if size is None:
                return None
            out.append(size)
        return out

    def cached(self, entry: TreeEntry) -> int:
        """How many of the file's chunks are cached."""
        return sum(1 for c in entry.chunks if self.cache.has(c))

    async def span(
        self, entry: TreeEntry, offset: int, length: int
    ) -> list[tuple[BlobId, int, int]]:
        """(chunk, offset in it, bytes) covering [offset, offset + length) of the file.
        An old tree has no chunk sizes: its chunks are fetched in order until known."""
        starts = self._starts_of(entry)
        if starts is None:
            starts = await self._learn_sizes(entry)
        out = []
        i = bisect.bisect_right(starts, offset) - 1
        end = min(offset + length, starts[-1])
        while 0 <= i < len(entry.chunks) and starts[i] < end:
            lo = max(offset, starts[i]) - starts[i]
            hi = min(end, starts[i + 1]) - starts[i]
            out.append((entry.chunks[i], lo, hi - lo))
            i += 1
        return out

    def _starts_of(self, entry: TreeEntry) -> list[int] | None:
        """Where each chunk starts in the file (and the end), if the sizes are known;
        kept for the entries of recent reads (one per open file, read many times)."""
        known = self._starts.get(id(entry))
        if known is not None and known[0] is entry:
            self._starts.move_to_end(id(entry))
            return known[1]
        sizes = self.sizes(entry)
        if sizes is None:
            return None
        starts = [0]
        for s in sizes:
            starts.append(starts[-1] + s)
        self._starts[id(entry)] = (entry, starts)
        if len(self._starts) > 256:
            self._starts.popitem(last=False)
        return starts

    async def _learn_sizes(self, entry: TreeEntry) -> list[int]:
        """An old tree has no chunk sizes: fetch its chunks in order until all are known."""
        starts = None
        while starts is None:
            unknown = [
                c for c in entry.chunks if c not in self._sizes and self.cache.size_of(c) is None
            ]
            await self.ensure(unknown[:8])
            for c in unknown[:8]:
                size = self.cache.size_of(c)
                if size is not None:
                    self._sizes[c] = size
            starts = self._starts_of(entry)
        return starts

    def window(self, entry: TreeEntry, offset: int, size: int = WINDOW) -> list[BlobId]:
        """The chunks from `offset` on, about `size` bytes of them (read-ahead)."""
        sizes = self.sizes(entry) or [0] * len(entry.chunks)
        out, pos, taken = [], 0, 0
        for c, s in zip(entry.chunks, sizes, strict=True):
            if pos + s > offset:
                out.append(c)
                taken += s or WINDOW // 4
                if taken >= size:
                    break
            pos += s
        return out

    # ------------------------------------------------------------------ reading

    async def read(self, entry: TreeEntry, offset: int, length: int) -> bytes:
        parts = await self.span(entry, offset, length)
        await self.ensure([c for c, _, _ in parts])
        out = []
        for c, lo, n in parts:
            await self.check(c)
            try:
                out.append(self.cache.read(c, lo, n))
            except FileNotFoundError:  # evicted between the fetch and now
                await self.ensure([c])
                out.append(self.cache.read(c, lo, n))
            if len(out[-1]) != n:  # the tree's chunk size is not the chunk's: refuse
                raise FetchFailed(f"chunk {c.short()} is shorter than its tree entry says")
        return b"".join(out)

    async def whole(self, c: BlobId) -> bytes:
        """A cached chunk's content, checked."""
        await self.check(c)
        return self.cache.read(c, 0, self.cache.size_of(c) or 0)

    async def check(self, c: BlobId) -> None:
        """A chunk from an earlier run must still be what its ID says (a crash may have
        torn it: the cache does not fsync); if not, it is fetched again."""
        if c in self.verified:
            return
        good = await trio.to_thread.run_sync(self._intact, c)
        if not good:
            log.warning("cached chunk %s was damaged; fetching it again", c.short())
            self.cache.remove(c)
            await self.ensure([c])
        self.verified.add(c)

    def _intact(self, c: BlobId) -> bool:
        try:
            data = self.cache.read(c, 0, self.cache.size_of(c) or 0)
        except FileNotFoundError:
            return True  # evicted: the next read fetches it
        return self.repo.blob_id(data) == c

    async def ensure(self, ids: Sequence[BlobId]) -> None:
        """Every chunk of `ids` in the cache; raises FetchFailed."""
        missing = [c for c in dict.fromkeys(ids) if not self.cache.has(c)]
        mine = [c for c in missing if c not in self._inflight]
        theirs = {self._inflight[c] for c in missing if c in self._inflight}
        if mine:
            done = trio.Event()
            for c in mine:
                self._inflight[c] = done
            try:
                await self._fetch(mine)
            finally:
                for c in mine:
                    del self._inflight[c]
                done.set()
        for event in theirs:
            await event.wait()
        lost = [c for c in missing if not self.cache.has(c)]
        if lost and not mine:
            await self.ensure(lost)  # another reader's fetch failed: try once ourselves
        elif lost:
            raise FetchFailed(f"chunk {lost[0].short()} could not be fetched")

    async def _fetch(self, ids: list[BlobId]) -> None:
        deadline = time.monotonic() + self.offline_timeout
        full = False
        while True:
            try:
                got = await trio.to_thread.run_sync(
                    self._load, ids, limiter=self._limiter, abandon_on_cancel=True
                )
                self.offline_since = None
                break
            except ServerUnreachable as exc:
                if self.offline_since is None:
                    self.offline_since = time.monotonic()
                if time.monotonic() >= deadline:
                    log.warning("cannot fetch file content while offline: %s", exc.message)
                    raise FetchFailed("the server is unreachable") from None
                await trio.sleep(1.0)
            except AnySyncError as exc:
                log.warning("cannot fetch file content: %s", exc.message)
                raise FetchFailed(exc.message) from None
            except OSError as exc:  # the cache's disk: full, or failing
                if exc.errno == errno.ENOSPC and self.on_full is not None and not full:
                    full = True
                    await self.on_full()  # evict, then try once more
                    continue
                log.warning("cannot store fetched content in the cache: %s", exc.strerror)
                raise FetchFailed(f"the cache cannot store it: {exc.strerror}") from None
        self.fetched_bytes += got
        if self.on_fetched is not None:
            self.on_fetched()

    def _load(self, ids: list[BlobId]) -> int:
        blobs = self.repo.load_many(BlobKind.DATA, ids)
        good = {c: b for c, b in blobs.items() if not isinstance(b, Exception)}
        self.cache.put_many(good)
        self.verified.update(good)
        for _c, b in blobs.items():
            if isinstance(b, Exception):
                raise b
        return sum(len(b) for b in good.values())
