"""The storage service without a server: streamed uploads through a temporary file,
the quota, lookups and reads. A real Metadata and a real LocalStore; the S3 path (a
store that is not a FileStore) through a LocalStore seen only as an ObjectStore."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.errors import IntegrityError, NotFound, QuotaExceeded, UsageError
from anysync.server import packs
from anysync.server.accounts import Caller
from anysync.server.config import ServerConfig
from anysync.server.metadata import Metadata, NewAccount, NewDevice
from anysync.server.storage import EntryIn, PackHeader, Storage
from anysync.store import LocalStore, ObjectStore, OutOfRangeError, Readable
from anysync.types import KdfParams

SECRET = b"s" * 32


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


class PlainStore:
    """A LocalStore behind the ObjectStore protocol only (as an S3 store is)."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.put_from: list[object] = []

    def put(self, key: str, source: Readable | Path, size: int) -> None:
        self.put_from.append(source)
        self.inner.put(key, source, size)

    def get_range(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        return self.inner.get_range(key, offset, length)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)


def caller(db: Metadata, email: str = "a@example.org") -> Caller:
    user, device = db.create_account(
        NewAccount(
            os.urandom(16).hex(),
            email,
            KdfParams(os.urandom(16), 17, 8, 1),
            b"h" * 32,
            b"s" * 16,
            "scrypt$14$8$1",
            b"keys",
        ),
        NewDevice("laptop", os.urandom(32), os.urandom(32)),
        None,
        1_800_000_000,
    )
    return Caller(user, device)


def refreshed(db: Metadata, c: Caller) -> Caller:
    user = db.user_by_email(c.user.email)
    assert user is not None
    return Caller(user, c.device)


def header(data: bytes, entries: list[EntryIn] | None = None) -> PackHeader:
    return PackHeader(len(data), hashlib.sha256(data).digest(), entries or [])


def upload(storage: Storage, c: Caller, data: bytes, piece: int = 1000) -> packs.PackId:
    entries = [EntryIn(b"\1" * 32, 0, min(len(data), 10))]
    u = storage.start_upload(c, header(data, entries))
    for i in range(0, len(data), piece):
        u.write(data[i : i + piece])
    return u.finish().pack_id


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def make(db: Metadata, store: ObjectStore, tmp_path: Path, quota: int = 0) -> Storage:
    return Storage(ServerConfig(default_quota=quota), db, store, SECRET, tmp_path / "spool")


def test_an_upload_goes_through_a_temp_file_into_the_store(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    c = caller(db)
    data = os.urandom(5000)
    u = storage.start_upload(c, header(data))
    u.write(data[:3000])
    assert u.path.parent == store.root / ".tmp"  # written where it is adopted
    assert u.path.read_bytes() == data[:3000]  # on disk, not held in memory
    u.write(data[3000:])
    stored = u.finish()
    assert not u.path.exists()
    assert b"".join(storage.read_pack(c, stored.pack_id.raw, 0, 0)) == data
    assert refreshed(db, c).user.used_bytes == 5000


def test_a_store_without_files_gets_the_spooled_file(db: Metadata, tmp_path: Path) -> None:
    plain = PlainStore(LocalStore(tmp_path / "objects"))
    storage = make(db, plain, tmp_path)
    c = caller(db)
    data = os.urandom(3000)
    pack_id = upload(storage, c, data)
    [source] = plain.put_from
    assert isinstance(source, Path) and source.parent == tmp_path / "spool"
    assert list((tmp_path / "spool").iterdir()) == []  # removed once stored
    assert b"".join(storage.read_pack(c, pack_id.raw, 100, 50)) == data[100:150]


@pytest.mark.parametrize(
    ("sent", "declared", "error", "message"),
    [
        (b"a" * 100, b"b" * 100, IntegrityError, "SHA-256 does not match"),
        (b"a" * 100, b"a" * 90, UsageError, "longer than the 90 bytes"),
        (b"a" * 100, b"a" * 110, UsageError, "ended after 100 of 110"),
    ],
)
def test_a_bad_upload_leaves_nothing(
    db: Metadata,
    store: LocalStore,
    tmp_path: Path,
    sent: bytes,
    declared: bytes,
    error: type[Exception],
    message: str,
) -> None:
    storage = make(db, store, tmp_path)
    c = caller(db)
    u = storage.start_upload(c, header(declared))
    with pytest.raises(error, match=message):
        u.write(sent)
        u.finish()
    u.abort()
    assert list((store.root / ".tmp").iterdir()) == []
    assert list(store.list()) == []
    assert refreshed(db, c).user.used_bytes == 0


def test_an_aborted_upload_leaves_nothing(db: Metadata, store: LocalStore, tmp_path: Path) -> None:
    storage = make(db, store, tmp_path)
    u = storage.start_upload(caller(db), header(b"x" * 100))
    u.write(b"x" * 50)
    u.abort()
    assert not u.path.exists()
    with pytest.raises(UsageError, match="already closed"):
        u.write(b"x")


def test_the_quota_is_checked_on_the_header(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, quota=1000)
    c = caller(db)
    upload(storage, c, b"y" * 600)
    with pytest.raises(QuotaExceeded, match="600 B of 1000 B used"):
        storage.start_upload(refreshed(db, c), header(b"z" * 600))
    assert list((store.root / ".tmp").iterdir()) == []


def test_index_entries_are_charged_on_the_header(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    """A tiny pack with many entries costs 256 B per entry, refused before any data."""
    storage = make(db, store, tmp_path, quota=10_000)
    entries = [EntryIn(i.to_bytes(32, "big"), 0, 1) for i in range(50)]
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        storage.start_upload(caller(db), header(b"x", entries))
    many = [EntryIn(i.to_bytes(32, "big"), 0, 1) for i in range(100_001)]
    with pytest.raises(UsageError, match="at most 100,000 index entries"):
        make(db, store, tmp_path).start_upload(caller(db, "b@example.org"), header(b"x", many))
    assert list((store.root / ".tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (PackHeader(0, b"s" * 32, []), "pack size must be"),
        (PackHeader(packs.MAX_PACK_SIZE + 1, b"s" * 32, []), "pack size must be"),
        (PackHeader(10, b"short", []), "sha256 must be 32 bytes"),
        (PackHeader(10, b"s" * 32, [EntryIn(b"\1" * 32, 5, 6)]), "does not lie inside"),
        (PackHeader(10, b"s" * 32, [EntryIn(b"\1" * 32, 0, 0)]), "does not lie inside"),
        (PackHeader(10, b"s" * 32, [EntryIn(b"short", 0, 5)]), "blob ID is 32 bytes"),
    ],
)
def test_headers_are_checked(
    db: Metadata, store: LocalStore, tmp_path: Path, bad: PackHeader, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        make(db, store, tmp_path).start_upload(caller(db), bad)


def test_find_blobs_and_reads_are_per_account(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    alice, bob = caller(db), caller(db, "b@example.org")
    pack_id = upload(storage, alice, os.urandom(100))
    [found] = storage.find_blobs(alice, [b"\1" * 32, b"\2" * 32]).locations
    assert (found.pack_id, found.offset, found.length) == (pack_id, 0, 10)
    assert storage.find_blobs(bob, [b"\1" * 32]).locations == []
    with pytest.raises(NotFound):
        storage.read_pack(bob, pack_id.raw, 0, 0)
    with pytest.raises(OutOfRangeError):
        storage.read_pack(alice, pack_id.raw, 90, 11)
    with pytest.raises(UsageError, match="at most 10000 blob IDs"):
        storage.find_blobs(alice, [b"\1" * 32] * 10_001)
    assert storage.pack_url(alice, pack_id.raw).size == 100
    assert storage.pack_url(alice, pack_id.raw).url == ""  # no presigning: use ReadPack
    assert storage.begin_upload(alice, header(b"x"), b"m" * 16) is None
