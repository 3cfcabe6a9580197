"""Repository: saves and loads encrypted blobs through a remote object API.

Write path: `save()` queues plaintext; `flush()` asks the server in one batch which
queued blobs it already holds, seals the rest on a thread pool (zstd and BLAKE3 release
the GIL) and groups them into packs; a full pack is laid out, hashed and uploaded on the
upload thread while the next one fills. `finish()` uploads the last pack and waits.
Callers store a commit only after `finish()`, and move a ref only after the commit is
stored: packs → index → commit → ref (docs/design.md).

Read path: `load_many()` locates blobs through the server's index, reads coalesced byte
ranges of packs and authenticates every blob on the thread pool; a bad blob is reported
per ID so that one tampered chunk names the files it belongs to instead of aborting
everything. A pack that is gone (a prune repacked and deleted it) is located again once.

The garbage-collection fence (docs/prune-design.md §7): the first FindBlobs answer of a
session gives its `generation`, which every ref update sends; the server refuses it
(GcRaced) if packs were condemned since. A later, higher answer makes the session
`stale`: what it learned about the server may be out of date. `revalidate()` asks again
about everything it knows and starts a new generation.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from anysync import faults
from anysync.client.repo import commit as commit_codec
from anysync.client.repo import envelope
from anysync.client.repo import tree as tree_codec
from anysync.client.repo.pack import PackBuilder, PackedBlob
from anysync.client.repo.uploader import UploadThread
from anysync.errors import IntegrityError, NotFound
from anysync.types import BlobId, BlobKind, BlobLocation, PackId

log = logging.getLogger(__name__)

FIND_BATCH = 10_000
# Flush the write queue when it holds this much plaintext or this many blobs.
QUEUE_BYTES = 16 * 1024 * 1024
QUEUE_BLOBS = 5_000
# The write queue is sealed on the pool in runs of about this much plaintext or this
# many blobs (see _batches).
SEAL_BATCH_BYTES = 1024 * 1024
SEAL_BATCH_BLOBS = 256
# Read ranges of one pack are merged when the gap between them is small.
COALESCE_GAP = 256 * 1024
MAX_READ = 32 * 1024 * 1024
# Packs being uploaded while the next one fills; bounds memory to about two packs.
MAX_UPLOADS_IN_FLIGHT = 1
# Large files are read in windows of about this much content (see stream()).
STREAM_WINDOW = 16 * 1024 * 1024


class BlobStore(Protocol):
    """Where packs live: the server's object API (anysync.client.remote implements it over
    gRPC). Refs are not here: they are a RefStore (repo/refs.py), read and moved only
    through a RefBook."""

    def find_blobs_at(self, ids: Sequence[BlobId]) -> tuple[dict[BlobId, BlobLocation], int]:
        """The blobs held among `ids` and the gc_generation they were read at."""

    def upload_pack(
        self,
        data: bytes,
        sha256: bytes,
        entries: Sequence[PackedBlob],
        maintenance: bool = False,
    ) -> PackId: ...

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class PackInfo:
    """One stored pack as ListPacks tells it; `entries` only when asked for."""

    pack_id: PackId
    size: int
    charged: int
    created_at: int  # unix seconds, server clock
    state: int  # pb.PackState: PACK_LIVE, PACK_CONDEMNED, PACK_REAPING
    condemned_at: int  # unix seconds; 0 = live
    entries: tuple[BlobLocation, ...] = ()


# PackState values, so callers need not import generated code.
PACK_LIVE = 0
PACK_CONDEMNED = 1
PACK_REAPING = 2


@dataclass(frozen=True)
class PackListing:
    """Every pack of the account, read in one server transaction, with that
    transaction's gc_generation and ref_seq (CondemnPacks expects both back)."""

    gc_generation: int
    ref_seq: int
    packs: list[PackInfo]


@dataclass(frozen=True)
class CondemnResult:
    gc_generation: int  # the account's, after the call
    condemned: int
    skipped_young: int  # younger than min_pack_age: kept
    condemned_bytes: int  # charge moved out of the quota by this call
    reap_at: int  # unix seconds when they are deleted


@dataclass(frozen=True)
class RepairResult:
    added: int
    removed: int
    gc_generation: int  # the account's, after the call


class RepoKeys(Protocol):
    """The keys a repository and its callers use; anysync.client.keys.MasterKeys has them."""

    @property
    def data_key(self) -> bytes: ...  # seals blobs

    @property
    def id_key(self) -> bytes: ...  # keys blob IDs

    def chunker_seed(self) -> int: ...  # for backup's and sync's chunkers


@dataclass
class WriteStats:
    blobs_new: int = 0
    blobs_known: int = 0
    bytes_plain_new: int = 0  # plaintext of new blobs
    bytes_stored: int = 0  # ciphertext added on the server, pack headers included
    packs: int = 0


class Repository:
    def __init__(
        self, blobs: BlobStore, keys: RepoKeys, workers: int = 2, maintenance: bool = False
    ) -> None:
        self._blobs = blobs
        self.keys = keys
        # A manage device's forget or prune: its packs may pass the quota by the
        # server's headroom.
        self.maintenance = maintenance
        # The fence: the gc_generation of this session's first FindBlobs answer (None
        # before it), and whether a later answer was higher.
        self.generation: int | None = None
        self.stale = False
        self.stats = WriteStats()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seal")
        self._uploader = UploadThread()
        self._uploads: list[Future[None]] = []
        self._lock = threading.Lock()
        self._known: set[BlobId] = set()  # on the server, or packed in this session
        self._queue: dict[BlobId, tuple[BlobKind, bytes | memoryview]] = {}
        self._queue_bytes = 0
        self._packer = PackBuilder(keys.data_key, keys.id_key)
        self._locations: dict[BlobId, BlobLocation] = {}

    def close(self, abort: bool = False) -> None:
        """Stop the worker threads. With `abort` (Ctrl-C) queued work is dropped and an
        upload in flight is not waited for: the caller has aborted the remote, which ends
        it, and the upload thread is a daemon, so it cannot hold the process either."""
        for pending in self._uploads:
            pending.cancel()
        self._uploader.shutdown(wait=not abort)
        self._pool.shutdown(wait=not abort, cancel_futures=True)

    # ------------------------------------------------------------------ writing

    def blob_id(self, plaintext: bytes | memoryview) -> BlobId:
        return envelope.blob_id(self.keys.id_key, plaintext)

    def save(
        self, kind: BlobKind, plaintext: bytes | memoryview, bid: BlobId | None = None
    ) -> BlobId:
        """Queue a blob for upload unless the server already holds it. Returns its ID.

        The caller must keep `plaintext` unchanged until the next flush().
        """
        bid = bid or self.blob_id(plaintext)
        if bid in self._known or bid in self._queue:
            self.stats.blobs_known += 1
            return bid
        self._queue[bid] = (kind, plaintext)
        self._queue_bytes += len(plaintext)
        if self._queue_bytes >= QUEUE_BYTES or len(self._queue) >= QUEUE_BLOBS:
            self.flush()
        return bid

    def save_data(self, pieces: Iterable[bytes]) -> tuple[tuple[BlobId, ...], tuple[int, ...]]:
        """Queue a file's content, cut into chunks by the caller: its chunk IDs and the
        size of each chunk (a tree entry's `chunks` and `chunk_sizes`; the file's size is
        their sum). An empty piece is no chunk: a tree has no chunk of 0 bytes."""
        chunks = []
        sizes = []
        for piece in pieces:
            if piece:
                chunks.append(self.save(BlobKind.DATA, piece))
                sizes.append(len(piece))
        return tuple(chunks), tuple(sizes)

    def flush(self) -> None:
        """Resolve the queue: skip what the server holds, seal and pack the rest."""
        found = self._find([i for i in self._queue if i not in self._known])
        self._known.update(found)
        todo = [(bid, kind, data) for bid, (kind, data) in self._queue.items() if bid not in found]
        self.stats.blobs_known += len(self._queue) - len(todo)
        self._queue.clear()
        self._queue_bytes = 0
        sealed = (c for batch in self._pool.map(self._seal_batch, _batches(todo)) for c in batch)
        for (bid, kind, data), ciphertext in zip(todo, sealed, strict=True):
            self._packer.add(bid, kind, ciphertext)
            self._known.add(bid)
            self.stats.blobs_new += 1
            self.stats.bytes_plain_new += len(data)
            if self._packer.full():
                self._upload()

    def _seal_batch(self, batch: list[tuple[BlobId, BlobKind, bytes | memoryview]]) -> list[bytes]:
        return [envelope.seal(self.keys.data_key, kind, bid, data) for bid, kind, data in batch]

    def finish(self) -> None:
        """Flush, upload the last pack and wait until every pack is stored."""
        self.flush()
        if len(self._packer):
            self._upload()
        self._wait_uploads(0)

    def _upload(self) -> None:
        self._wait_uploads(MAX_UPLOADS_IN_FLIGHT - 1)
        packer = self._packer
        self._packer = PackBuilder(self.keys.data_key, self.keys.id_key)

        def run() -> None:
            pack = packer.finish()  # lay out and hash off the main thread
            self._blobs.upload_pack(pack.data, pack.sha256, pack.blobs, self.maintenance)
            with self._lock:
                self.stats.packs += 1
                self.stats.bytes_stored += len(pack.data)
            faults.point("repo.pack-uploaded")

        self._uploads.append(self._uploader.submit(run))

    def _wait_uploads(self, keep: int) -> None:
        while len(self._uploads) > keep:
            self._uploads.pop(0).result()  # re-raises the upload's error

    def _find(self, ids: Sequence[BlobId]) -> dict[BlobId, BlobLocation]:
        """Ask the server where `ids` are. The first answer of a session is asked for
        even with nothing to ask about: it sets the generation before any upload."""
        found: dict[BlobId, BlobLocation] = {}
        starts = range(0, len(ids), FIND_BATCH) if ids or self.generation is not None else [0]
        for start in starts:
            batch, generation = self._blobs.find_blobs_at(ids[start : start + FIND_BATCH])
            found.update(batch)
            self._saw_generation(generation)
        with self._lock:
            self._locations.update(found)
        return found

    def _saw_generation(self, generation: int) -> None:
        with self._lock:
            if self.generation is None:
                self.generation = generation
            elif generation > self.generation:
                self.stale = True

    def revalidate(self) -> set[BlobId]:
        """Ask the server again about every blob this session knows (after storing the
        queue): its first answer starts a new generation; the blobs it no longer holds
        are forgotten and returned, so that the caller saves them again."""
        self.finish()
        with self._lock:
            ids = sorted(self._known | self._locations.keys())
            self.generation = None
            self.stale = False
            self._locations.clear()
        found = self._find(ids)
        lost = set(ids) - found.keys()
        with self._lock:
            self._known = set(found)
        if lost:
            log.info("%d blob(s) this session relied on are no longer on the server", len(lost))
        return lost

    def missing(self, ids: Iterable[BlobId]) -> set[BlobId]:
        """Which of `ids` the server does not hold. Blobs this session queued, packed or
        found are known; the others are asked about in one batched find."""
        unknown = [i for i in dict.fromkeys(ids) if i not in self._known and i not in self._queue]
        found = self._find(unknown)
        self._known.update(found)
        return set(unknown) - found.keys()

    def save_tree(self, entries: list[tree_codec.TreeEntry]) -> BlobId:
        return self.save(BlobKind.TREE, tree_codec.encode(entries))

    def save_commit(self, c: commit_codec.Commit) -> BlobId:
        return self.save(BlobKind.COMMIT, commit_codec.encode(c))

    # ------------------------------------------------------------------ reading

    def locate(self, ids: Iterable[BlobId]) -> None:
        """Fetch index entries for blobs not located yet (batched)."""
        unknown = [i for i in dict.fromkeys(ids) if i not in self._locations]
        self._find(unknown)

    def forget_pack(self, pack_id: PackId) -> None:
        """A pack the server no longer has (pruned): forget the locations in it, so that
        the next locate() asks where its blobs are now."""
        with self._lock:
            gone = [b for b, loc in self._locations.items() if loc.pack_id == pack_id]
            for bid in gone:
                del self._locations[bid]
                self._known.discard(bid)

    def locations(self, ids: Iterable[BlobId]) -> dict[BlobId, BlobLocation]:
        """Where the server's index puts each of `ids`; those it lacks are left out."""
        wanted = list(dict.fromkeys(ids))
        self.locate(wanted)
        return {i: self._locations[i] for i in wanted if i in self._locations}

    def pack_reaches(self, pack_id: PackId, end: int) -> bool:
        """Does the pack exist with at least `end` bytes? One byte is read, at end - 1."""
        try:
            return len(self._blobs.read_pack(pack_id, end - 1, 1)) == 1
        except NotFound:
            return False

    def load(self, kind: BlobKind, bid: BlobId) -> bytes:
        result = self.load_many(kind, [bid])[bid]
        if isinstance(result, Exception):
            raise result
        return result

    def load_many(
        self, kind: BlobKind, ids: Sequence[BlobId], relocate: bool = True
    ) -> dict[BlobId, bytes | IntegrityError | NotFound]:
        """Load and authenticate blobs; failures are returned per ID, not raised.

        A pack that is gone may have been repacked by a prune: its blobs are located
        again once (with `relocate`) and read from where they are now."""
        self.locate(ids)
        out: dict[BlobId, bytes | IntegrityError | NotFound] = {}
        gone: set[PackId] = set()
        by_pack: dict[PackId, list[BlobLocation]] = defaultdict(list)
        for bid in dict.fromkeys(ids):
            loc = self._locations.get(bid)
            if loc is None:
                out[bid] = NotFound(f"blob {bid.short()} is missing from the server")
            else:
                by_pack[loc.pack_id].append(loc)
        for pack_id, locs in by_pack.items():
            for start, end, group in _coalesce(sorted(locs, key=lambda x: x.offset)):
                try:
                    data = self._blobs.read_pack(pack_id, start, end - start)
                except NotFound as exc:
                    gone.add(pack_id)
                    for loc in group:
                        out[loc.blob_id] = exc
                    continue
                view = memoryview(data)
                pieces = [
                    (loc.blob_id, view[loc.offset - start : loc.offset - start + loc.length])
                    for loc in group
                ]
                for bid, result in zip(
                    (b for b, _ in pieces),
                    self._pool.map(lambda p: self._open(kind, *p), pieces),
                    strict=True,
                ):
                    out[bid] = result
        if gone and relocate:
            for pack_id in gone:
                self.forget_pack(pack_id)
            again = [b for b, r in out.items() if isinstance(r, NotFound)]
            out.update(self.load_many(kind, again, relocate=False))
        return out

    def _open(self, kind: BlobKind, bid: BlobId, sealed: memoryview) -> bytes | IntegrityError:
        try:
            return envelope.open_(self.keys.data_key, self.keys.id_key, kind, bid, sealed)
        except IntegrityError as exc:
            return exc

    def stream(
        self, chunks: Sequence[BlobId], size: int, window: int = STREAM_WINDOW
    ) -> Iterator[bytes]:
        """A file's content, chunk by chunk, fetched about `window` bytes at a time; the
        next window is fetched while the caller consumes this one, so memory stays at
        two windows whatever the file's size. Raises the first failed chunk's error."""
        average = max(size // max(len(chunks), 1), 1)
        per = max(window // average, 1)
        windows = [list(chunks[i : i + per]) for i in range(0, len(chunks), per)]
        if not windows:
            return
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        try:
            pending = ahead.submit(self.load_many, BlobKind.DATA, windows[0])
            for i, ids in enumerate(windows):
                blobs = pending.result()
                if i + 1 < len(windows):
                    pending = ahead.submit(self.load_many, BlobKind.DATA, windows[i + 1])
                yield from chunks_of(blobs, ids)
        finally:
            # Not waiting: on Ctrl-C the prefetch may be blocked in a read that only the
            # remote's abort (after this unwinds) ends.
            ahead.shutdown(wait=False, cancel_futures=True)

    def load_tree(self, bid: BlobId) -> list[tree_codec.TreeEntry]:
        return tree_codec.decode(self.load(BlobKind.TREE, bid))

    def load_commit(self, bid: BlobId) -> commit_codec.Commit:
        return commit_codec.decode(self.load(BlobKind.COMMIT, bid))


def _batches(
    todo: list[tuple[BlobId, BlobKind, bytes | memoryview]],
) -> Iterator[list[tuple[BlobId, BlobKind, bytes | memoryview]]]:
    """`todo` in order, cut into runs of about SEAL_BATCH_BYTES (a big blob is a run by
    itself): one pool task per run rather than per blob, since a task's Future and its
    locks cost as much as sealing a small file."""
    batch: list[tuple[BlobId, BlobKind, bytes | memoryview]] = []
    size = 0
    for item in todo:
        batch.append(item)
        size += len(item[2])
        if size >= SEAL_BATCH_BYTES or len(batch) >= SEAL_BATCH_BLOBS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def chunks_of(
    blobs: dict[BlobId, bytes | IntegrityError | NotFound], ids: Sequence[BlobId]
) -> Iterator[bytes]:
    """The contents of `ids` in order, from a load_many() result; raises the first error."""
    for cid in ids:
        data = blobs[cid]
        if isinstance(data, Exception):
            raise data
        yield data


def _coalesce(
    locs: list[BlobLocation],
) -> Iterable[tuple[int, int, list[BlobLocation]]]:
    """Merge sorted ranges of one pack into reads of at most MAX_READ bytes."""
    group: list[BlobLocation] = []
    start = end = 0
    for loc in locs:
        loc_end = loc.offset + loc.length
        if group and (loc.offset - end > COALESCE_GAP or loc_end - start > MAX_READ):
            yield start, end, group
            group = []
        if not group:
            start = loc.offset
        group.append(loc)
        end = max(end, loc_end) if len(group) > 1 else loc_end
    if group:
        yield start, end, group
