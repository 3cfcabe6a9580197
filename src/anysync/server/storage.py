"""Packs of an account: deduplication lookups, uploads (streamed and direct), reads.

No gRPC here (anysync.server.service converts the wire). Every method blocks (SQLite,
the object store, hashing) and runs in the pool.

A streamed upload (docs/protocol.md §7.2) is a `PackUpload`: its header is checked and
the quota with it before any data is taken; each piece is hashed and written to a
temporary file as it arrives, so an upload holds one piece in memory whatever its size;
`finish` checks length and SHA-256, hands the file to the store (adopted in place by a
FileStore, put from the file by others), and only then records the pack. A pack that
fails a check, or whose client goes away, is removed by `abort` and never becomes an
object; a pack the database refuses is deleted from the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from anysync.errors import IntegrityError, NeedsManage, NotFound, UsageError
from anysync.server import packs
from anysync.server.accounts import Caller
from anysync.server.config import ServerConfig
from anysync.server.gc import Reaper
from anysync.server.metadata import (
    Condemned,
    Metadata,
    PackListing,
    Repaired,
    check_inside_pack,
    check_pack_entries,
    check_quota,
    pack_charge,
)
from anysync.server.uploads import PendingUpload, PendingUploads
from anysync.store import FileStore, ObjectStore, OutOfRangeError, PresigningStore
from anysync.types import BLOB_ID_SIZE, PACK_ID_SIZE, BlobId, BlobLocation, PackId

log = logging.getLogger(__name__)

MAX_FIND_BLOBS = 10_000
MAX_CONDEMN = 100_000  # pack IDs per CondemnPacks call


class ByteCounter(Protocol):
    """Where pack bytes moved are reported (the metrics endpoint counts them)."""

    def add_bytes(self, direction: str, n: int) -> None: ...  # direction: "in" or "out"


class _NoCounter:
    def add_bytes(self, direction: str, n: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class EntryIn:
    """One index entry of an upload's header, as the client sent it."""

    blob_id: bytes
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class PackHeader:
    size: int
    sha256: bytes
    entries: Sequence[EntryIn]
    maintenance: bool = False  # may pass the quota by [gc] maintenance_headroom (manage)


@dataclass(frozen=True, slots=True)
class StoredPack:
    pack_id: PackId
    size: int


@dataclass(frozen=True, slots=True)
class Found:
    """A FindBlobs answer: live locations, and the generation they were read at."""

    locations: list[BlobLocation]
    gc_generation: int


@dataclass(frozen=True, slots=True)
class CondemnResult:
    condemned: Condemned
    reap_at: int  # unix seconds


@dataclass(frozen=True, slots=True)
class DirectUpload:
    pack_id: PackId
    url: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class PackUrl:
    size: int
    url: str = ""  # "" = read it with ReadPack
    expires_at: int = 0


class Storage:
    def __init__(
        self,
        config: ServerConfig,
        db: Metadata,
        store: ObjectStore,
        server_secret: bytes,
        spool_dir: Path,
        counter: ByteCounter | None = None,
        reaper: Reaper | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.secret = server_secret
        self.spool_dir = spool_dir
        self.counter: ByteCounter = counter or _NoCounter()
        self.pending = PendingUploads()
        self.reaper = reaper or Reaper(db, store, server_secret, config.gc_grace_seconds)

    def quota(self, caller: Caller) -> int:
        q = caller.user.quota_bytes
        return q if q is not None else self.config.default_quota

    def upload_quota(self, caller: Caller, header: PackHeader) -> int:
        """The quota an upload must fit: a manage device's maintenance upload (forget's
        edit commits, repacks) may pass it by the headroom, so that an account over its
        quota can still be pruned back under it. 0 = unlimited."""
        quota = self.quota(caller)
        if quota and header.maintenance and caller.manages():
            return quota + self.config.gc_maintenance_headroom
        return quota

    @property
    def presigner(self) -> PresigningStore | None:
        """The store, if clients should reach it directly (S3 with `direct = true`)."""
        s3 = self.config.s3
        if s3 is None or not s3.direct or not isinstance(self.store, PresigningStore):
            return None
        return self.store

    def find_blobs(self, caller: Caller, blob_ids: Sequence[bytes]) -> Found:
        if len(blob_ids) > MAX_FIND_BLOBS:
            raise UsageError(f"at most {MAX_FIND_BLOBS} blob IDs per FindBlobs call")
        ids = [blob_id(raw) for raw in blob_ids]
        return Found(*self.db.find_blobs(caller.user.id, ids))

    # ------------------------------------------------------------ garbage collection

    def list_packs(
        self, caller: Caller, include_entries: bool, include_condemned: bool
    ) -> PackListing:
        """The account's packs in one read transaction; close the listing when done."""
        return self.db.list_packs(caller.user.id, include_entries, include_condemned)

    def condemn_packs(
        self,
        caller: Caller,
        raw_pack_ids: Sequence[bytes],
        expected_generation: int,
        expected_ref_seq: int,
    ) -> CondemnResult:
        """Condemn packs a prune found dead (docs/prune-design.md §3): they leave
        FindBlobs and the quota at once and are deleted after the grace period; at
        grace 0 before this returns."""
        caller.refuse_append_only("delete packs")
        if not caller.manages():
            raise NeedsManage(
                "deleting packs needs the manage right; prove the password (Elevate) first"
            )
        if len(raw_pack_ids) > MAX_CONDEMN:
            raise UsageError(f"at most {MAX_CONDEMN:,} pack IDs per CondemnPacks call")
        ids = [pack_id(raw) for raw in raw_pack_ids]
        now = _now()
        done = self.db.condemn_packs(
            caller.user.id,
            ids,
            (expected_generation, expected_ref_seq),
            young_after=now - self.config.gc_min_pack_age_seconds,
            device_id=caller.device.id,
            now=now,
        )
        log.info(
            "account %s: %d packs condemned (%d bytes) by device %d",
            caller.user.user_id,
            done.condemned,
            done.condemned_bytes,
            caller.device.id,
        )
        if done.condemned and self.config.gc_grace_seconds == 0:
            self.reaper.run()  # no grace: the deletion is part of the call
        return CondemnResult(done, now + self.config.gc_grace_seconds)

    def repair_index(
        self,
        caller: Caller,
        raw_pack_id: bytes,
        entries: Sequence[EntryIn],
        expected_generation: int,
    ) -> Repaired:
        """Make a pack's index rows what its header lists (`anysync repair index`)."""
        caller.refuse_append_only("repair the index")
        if not caller.manages():
            raise NeedsManage(
                "repairing the index needs the manage right; prove the password (Elevate) first"
            )
        pid = pack_id(raw_pack_id)
        check_pack_entries(len(entries))
        # Whether they lie inside the pack is checked with its size, in the transaction.
        locations = [BlobLocation(blob_id(e.blob_id), pid, e.offset, e.length) for e in entries]
        done = self.db.repair_index(caller.user.id, pid, locations, expected_generation)
        log.info(
            "account %s: index of pack %s repaired by device %d (%d added, %d removed)",
            caller.user.user_id,
            pid,
            caller.device.id,
            done.added,
            done.removed,
        )
        return done

    # ------------------------------------------------------------ streamed uploads

    def _check_charge(self, caller: Caller, header: PackHeader) -> None:
        """What add_pack will refuse, refused before the data moves: too many index
        entries, or a charge (metadata.pack_charge) over the quota."""
        check_pack_entries(len(header.entries))
        charge = pack_charge(header.size, len(header.entries))
        check_quota(caller.user.used_bytes, charge, self.upload_quota(caller, header))

    def start_upload(self, caller: Caller, header: PackHeader) -> PackUpload:
        """Check the header and the quota, and open the upload's temporary file."""
        pack_id = PackId.random()
        entries = _checked_header(header, pack_id)
        self._check_charge(caller, header)  # before any data; add_pack checks again
        if isinstance(self.store, FileStore):
            path = self.store.temp_path()
        else:
            self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.spool_dir / f"upload-{pack_id.hex()}.part"
        return PackUpload(self, caller, pack_id, header, entries, path)

    def _store_and_record(self, upload: PackUpload) -> StoredPack:
        key = packs.pack_key(self.secret, upload.caller.user.user_id, upload.pack_id)
        if isinstance(self.store, FileStore):
            self.store.adopt(key, upload.path, upload.header.size)
        else:
            self.store.put(key, upload.path, upload.header.size)
        quota = self.upload_quota(upload.caller, upload.header)
        return self._record(
            upload.caller, key, upload.pack_id, upload.header.size, upload.entries, quota
        )

    def _record(
        self,
        caller: Caller,
        key: str,
        pack_id: PackId,
        size: int,
        entries: list[BlobLocation],
        quota: int,
    ) -> StoredPack:
        """Index a stored pack: the object exists before anything refers to it."""
        try:
            self.db.add_pack(caller.user.id, pack_id, size, entries, quota, _now())
        except BaseException:
            self.store.delete(key)  # not recorded, so nothing may refer to it
            raise
        self.counter.add_bytes("in", size)
        log.info(
            "account %s: pack %s stored (%d bytes, %d blobs)",
            caller.user.user_id,
            pack_id,
            size,
            len(entries),
        )
        return StoredPack(pack_id, size)

    # ------------------------------------------------------------ direct path

    def begin_upload(self, caller: Caller, header: PackHeader, md5: bytes) -> DirectUpload | None:
        """A presigned PUT for the pack; None when the store cannot take one directly."""
        presigner = self.presigner
        if presigner is None:
            return None
        if len(md5) != 16:
            raise UsageError("BeginUpload needs the pack's 16-byte MD5")
        pack_id = PackId.random()
        entries = _checked_header(header, pack_id)
        self._check_charge(caller, header)
        seconds = self._presign_seconds()
        expires = time.time() + seconds
        self.pending.add(
            PendingUpload(
                caller.user.id,
                pack_id,
                header.size,
                bytes(md5),
                entries,
                expires,
                self.upload_quota(caller, header),
            )
        )
        key = packs.pack_key(self.secret, caller.user.user_id, pack_id)
        return DirectUpload(pack_id, presigner.presign("PUT", key, seconds), int(expires))

    def commit_upload(self, caller: Caller, raw_pack_id: bytes) -> StoredPack:
        presigner = self.presigner
        if presigner is None:
            raise UsageError("this server does not take direct uploads; use UploadPack")
        upload = self.pending.take(caller.user.id, pack_id(raw_pack_id))
        key = packs.pack_key(self.secret, caller.user.user_id, upload.pack_id)
        try:
            size, etag = presigner.stat(key)
        except NotFound:
            raise NotFound(f"pack {upload.pack_id} did not arrive in the object store") from None
        # A single-part upload's ETag is the MD5 of the object; multipart ETags ("…-N")
        # are not, and some stores use other ETags: then only the size can be checked.
        md5_checked = len(etag) == 32 and "-" not in etag
        if size != upload.size or (md5_checked and etag != upload.md5.hex()):
            self.store.delete(key)
            raise IntegrityError(
                f"the stored pack {upload.pack_id} is not what was announced "
                f"({size} bytes, ETag {etag}); upload it again"
            )
        return self._record(caller, key, upload.pack_id, size, upload.entries, upload.quota)

    def pack_url(self, caller: Caller, raw_pack_id: bytes) -> PackUrl:
        pid = pack_id(raw_pack_id)
        size = self.db.pack_size(caller.user.id, pid)
        if size is None:
            raise NotFound(f"no pack {pid}")
        presigner = self.presigner
        if presigner is None:
            return PackUrl(size)
        seconds = self._presign_seconds()
        key = packs.pack_key(self.secret, caller.user.user_id, pid)
        url = presigner.presign("GET", key, seconds)
        return PackUrl(size, url, int(time.time() + seconds))

    def _presign_seconds(self) -> int:
        assert self.config.s3 is not None
        return self.config.s3.presign_seconds

    # ------------------------------------------------------------ reads

    def read_pack(
        self, caller: Caller, raw_pack_id: bytes, offset: int, length: int
    ) -> Iterator[bytes]:
        """The range's pieces (at most READ_CHUNK bytes each); iterating blocks too."""
        pid = pack_id(raw_pack_id)
        # Packs of other accounts are simply not found: same answer as a missing one.
        size = self.db.pack_size(caller.user.id, pid)
        if size is None:
            raise NotFound(f"no pack {pid}")
        end = size if length == 0 else offset + length
        if offset > size or end > size:
            raise OutOfRangeError(f"range {offset}+{length} is outside pack {pid} of {size} bytes")
        key = packs.pack_key(self.secret, caller.user.user_id, pid)
        try:
            pieces = self.store.get_range(key, offset, end - offset)
        except (NotFound, OutOfRangeError) as exc:
            log.error(
                "pack %s of account %s is recorded but not stored as recorded: %s",
                pid,
                caller.user.user_id,
                exc,
            )
            # The store's message names its internal key: it stays in the server's log.
            raise NotFound(f"pack {pid} is recorded but missing from the store") from None
        return self._counted(pieces)

    def _counted(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.counter.add_bytes("out", len(piece))
            yield piece


class PackUpload:
    """One streamed upload in progress: `write` each piece, then `finish` or `abort`.

    The methods may run in different pool threads, one at a time or (abort after a
    cancelled write) at once: a lock orders them.
    """

    def __init__(
        self,
        storage: Storage,
        caller: Caller,
        pack_id: PackId,
        header: PackHeader,
        entries: list[BlobLocation],
        path: Path,
    ) -> None:
        self._storage = storage
        self.caller = caller
        self.pack_id = pack_id
        self.header = header
        self.entries = entries
        self.path = path
        self._check = packs.PackCheck(header.size, header.sha256)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = open(path, "xb")  # noqa: SIM115 - closed by finish/abort

    def write(self, piece: bytes) -> None:
        with self._lock:
            if self._file is None:
                raise UsageError("the upload was already closed")
            self._check.add(piece)
            self._file.write(piece)
            self._file.flush()  # on disk, not in a buffer: a piece at a time in memory

    def finish(self) -> StoredPack:
        """Check the whole pack, store it and record it; on any failure, leave nothing."""
        with self._lock:
            try:
                if self._file is None:
                    raise UsageError("the upload was already closed")
                self._check.finish()
                self._file.close()
                self._file = None
                return self._storage._store_and_record(self)
            finally:
                self._close()

    def abort(self) -> None:
        """Drop the upload: the temporary file goes, nothing is stored or recorded."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


def _checked_header(header: PackHeader, pid: PackId) -> list[BlobLocation]:
    if not 0 < header.size <= packs.MAX_PACK_SIZE:
        raise UsageError(f"pack size must be 1 to {packs.MAX_PACK_SIZE} bytes")
    if len(header.sha256) != 32:
        raise UsageError("the pack's sha256 must be 32 bytes")
    return [_pack_entry(e, pid, header.size) for e in header.entries]


def _pack_entry(entry: EntryIn, pid: PackId, size: int) -> BlobLocation:
    check_inside_pack(size, entry.offset, entry.length)
    return BlobLocation(blob_id(entry.blob_id), pid, entry.offset, entry.length)


def blob_id(raw: bytes, what: str = "blob ID") -> BlobId:
    if len(raw) != BLOB_ID_SIZE:
        raise UsageError(f"a {what} is {BLOB_ID_SIZE} bytes, got {len(raw)}")
    return BlobId(bytes(raw))


def pack_id(raw: bytes) -> PackId:
    if len(raw) != PACK_ID_SIZE:
        raise UsageError(f"a pack ID is {PACK_ID_SIZE} bytes, got {len(raw)}")
    return PackId(bytes(raw))


def _now() -> int:
    return int(time.time())
