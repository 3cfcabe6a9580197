"""Server metadata on a real SQLite file: migrations, compare-and-swap, account scoping,
what metadata costs in quota, a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client.repo import envelope
from anysync.client.repo.pack import PackBuilder
from anysync.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    UsageError,
)
from anysync.server import metadata
from anysync.server.metadata import (
    DISK_FULL,
    MAX_PACK_ENTRIES,
    PACK_ENTRY_CHARGE,
    Metadata,
    NewAccount,
    NewDevice,
    RefWrite,
    migrations,
    pack_charge,
)
from anysync.types import BlobId, BlobKind, BlobLocation, KdfParams, PackId
from tests.unit.fakes import KEYS

NOW = 1_800_000_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


def _account(db: Metadata, email: str, invite: bytes | None = None) -> tuple[int, int]:
    """(user row ID, device ID) of a new account."""
    user, device = db.create_account(
        NewAccount(
            user_id=os.urandom(16).hex(),
            email=email,
            kdf=KdfParams(os.urandom(16), 17, 8, 1),
            login_hash=os.urandom(32),
            login_hash_salt=os.urandom(16),
            login_hash_params="scrypt$14$8$1",
            master_keys=b"ciphertext",
        ),
        NewDevice("laptop", os.urandom(32), os.urandom(32)),
        invite,
        NOW,
    )
    return user.id, device.id


def _blob(n: int) -> BlobId:
    return BlobId(n.to_bytes(32, "big"))


def _pack(db: Metadata, user: int, blob_ids: list[BlobId], quota: int = 0) -> PackId:
    pack = PackId.random()
    locations = [BlobLocation(b, pack, 1000 * i, 1000) for i, b in enumerate(blob_ids)]
    db.add_pack(user, pack, 1000 * len(blob_ids), locations, quota, NOW)
    return pack


# ---------------------------------------------------------------- migrations


def test_a_new_database_gets_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Metadata.open(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations())
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"users", "devices", "invites", "packs", "blob_locations", "refs"} <= tables
    finally:
        conn.close()


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    db = Metadata.open(path)
    _account(db, "a@example.org")
    db.close()
    db = Metadata.open(path)  # would fail on CREATE TABLE if re-applied
    assert db.user_by_email("a@example.org") is not None
    db.close()


def test_a_database_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Metadata.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this server knows"):
        Metadata.open(path)


def test_migration_files_are_numbered_without_gaps() -> None:
    assert [v for v, _, _ in migrations()] == list(range(1, len(migrations()) + 1))


def test_a_schema_1_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_to(conn, 1)
    conn.execute(
        "INSERT INTO users (id, user_id, email, kdf_salt, kdf_log_n, kdf_r, kdf_p, login_hash,"
        " login_hash_salt, login_hash_params, master_keys, used_bytes, created_at)"
        " VALUES (1, 'u', 'a@example.org', x'00', 17, 8, 1, x'00', x'00', 'p', x'00', 10, 0)"
    )
    conn.execute("INSERT INTO packs VALUES (1, x'01', 10, 0)")  # schema 1: no `charged`
    conn.close()
    db = Metadata.open(path)
    try:
        conn = db.connection()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations()) == 5
        assert tuple(conn.execute("SELECT size, charged FROM packs").fetchone()) == (10, 10)
        assert db.user_by_id(1).used_bytes == 10  # old packs keep what they were charged
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"login_failures", "call_buckets"} <= tables
    finally:
        db.close()


def migrate_to(conn: sqlite3.Connection, version: int) -> None:
    """Apply the migrations up to `version` only, as an older server did."""
    for v, _, sql in migrations():
        if v <= version:
            for statement in metadata._statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {v:d}")


def test_foreign_keys_are_enforced(db: Metadata) -> None:
    with pytest.raises(sqlite3.IntegrityError), db.transaction() as conn:
        conn.execute(
            "INSERT INTO packs (user, pack_id, size, created_at) VALUES (12345, x'00', 1, 0)"
        )  # no such user


# ---------------------------------------------------------------- accounts and invites


def test_duplicate_email_or_user_id(db: Metadata) -> None:
    _account(db, "a@example.org")
    with pytest.raises(AlreadyExists, match="e-mail"):
        _account(db, "a@example.org")


def test_invite_is_consumed_with_the_account(db: Metadata) -> None:
    db.add_invite(b"h" * 32, NOW, NOW + 3600)
    user, _ = _account(db, "a@example.org", invite=b"h" * 32)
    [invite] = db.list_invites()
    assert invite.used_at == NOW
    assert invite.used_by_email == "a@example.org"
    with pytest.raises(PermissionDenied, match="invalid or used invite code"):
        _account(db, "b@example.org", invite=b"h" * 32)
    assert db.user_by_email("b@example.org") is None
    assert user


def test_expired_or_unknown_invites_are_refused(db: Metadata) -> None:
    db.add_invite(b"e" * 32, NOW - 10, NOW)  # expires exactly now
    for code in (b"e" * 32, b"u" * 32):
        with pytest.raises(PermissionDenied):
            _account(db, "a@example.org", invite=code)


def test_a_failed_signup_does_not_consume_the_invite(db: Metadata) -> None:
    _account(db, "a@example.org")
    db.add_invite(b"h" * 32, NOW, NOW + 3600)
    with pytest.raises(AlreadyExists):
        _account(db, "a@example.org", invite=b"h" * 32)
    assert db.list_invites()[0].used_at is None


def test_devices_are_scoped_to_their_account(db: Metadata) -> None:
    alice, alice_dev = _account(db, "alice@example.org")
    bob, _ = _account(db, "bob@example.org")
    with pytest.raises(NotFound):
        db.revoke_device(bob, alice_dev, NOW)
    db.revoke_device(alice, alice_dev, NOW)
    db.revoke_device(alice, alice_dev, NOW + 5)  # idempotent: the first time stays
    [dev] = db.list_devices(alice)
    assert dev.revoked_at == NOW
    assert db.list_devices(bob)[0].revoked_at is None


# ---------------------------------------------------------------- packs and blobs


def test_pack_index_and_usage(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    pack = _pack(db, user, [_blob(1), _blob(2)])
    assert db.pack_size(user, pack) == 2000
    assert db.user_by_id(user).used_bytes == 2000
    found = _locations(db, user, [_blob(1), _blob(2), _blob(3)])
    assert {(f.blob_id, f.pack_id, f.offset) for f in found} == {
        (_blob(1), pack, 0),
        (_blob(2), pack, 1000),
    }


def test_every_copy_of_a_blob_is_a_location(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    first = _pack(db, user, [_blob(1)])
    second = _pack(db, user, [_blob(1)])  # a dedup race, or a repack
    found = _locations(db, user, [_blob(1)])
    assert {loc.pack_id for loc in found} == {first, second}


def test_find_blobs_in_large_batches(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    _pack(db, user, [_blob(i) for i in range(0, 2400, 2)])
    found = _locations(db, user, [_blob(i) for i in range(2400)])
    assert len(found) == 1200


def test_find_blobs_answers_an_id_asked_twice_once(db: Metadata) -> None:
    # The IDs are looked up sorted, in batches: a repeated ID must not give its
    # locations once per batch it lands in.
    user, _ = _account(db, "a@example.org")
    pack = _pack(db, user, [_blob(1), _blob(2)])
    asked = [_blob(1)] * 700 + [_blob(i) for i in range(3, 900)] + [_blob(1), _blob(2)]
    found = _locations(db, user, asked)
    assert sorted((f.blob_id, f.pack_id, f.offset) for f in found) == [
        (_blob(1), pack, 0),
        (_blob(2), pack, 1000),
    ]


def test_quota_is_checked_in_the_transaction(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    _pack(db, user, [_blob(1)], quota=2500)
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        _pack(db, user, [_blob(2), _blob(3)], quota=2500)
    assert db.user_by_id(user).used_bytes == 1000
    assert _locations(db, user, [_blob(2)]) == []


# ---------------------------------------------------------------- metadata in the quota


def test_a_pack_is_charged_its_size_but_at_least_per_index_entry() -> None:
    assert pack_charge(10_000, 3) == 10_000
    assert pack_charge(1, 150_000) == 150_000 * PACK_ENTRY_CHARGE  # the 1-byte packs
    assert pack_charge(1, 0) == PACK_ENTRY_CHARGE  # a pack row is not free either
    assert pack_charge(3 * PACK_ENTRY_CHARGE, 3) == 3 * PACK_ENTRY_CHARGE


def test_index_entries_count_toward_the_quota(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    pack = PackId.random()
    tiny = [BlobLocation(_blob(i), pack, 0, 1) for i in range(100)]
    with pytest.raises(QuotaExceeded, match=r"this upload needs 25\.0 KiB more$"):
        db.add_pack(user, pack, 1, tiny, 20_000, NOW)
    assert _locations(db, user, [_blob(0)]) == []
    db.add_pack(user, pack, 1, tiny, 0, NOW)  # unlimited: recorded, and charged
    assert db.user_by_id(user).used_bytes == 100 * PACK_ENTRY_CHARGE
    assert len(_locations(db, user, [_blob(i) for i in range(100)])) == 100


def test_a_pack_carries_at_most_max_pack_entries(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    pack = PackId.random()
    many = [BlobLocation(_blob(i), pack, i, 1) for i in range(MAX_PACK_ENTRIES + 1)]
    with pytest.raises(UsageError, match=r"^a pack may carry at most 100,000 index entries"):
        db.add_pack(user, pack, len(many), many, 0, NOW)
    assert db.pack_size(user, pack) is None


def test_a_real_clients_pack_of_tiny_blobs_is_charged_its_size(db: Metadata) -> None:
    """The smallest blobs a client writes (empty files' chunks, tiny trees) still take
    more pack bytes than PACK_ENTRY_CHARGE: normal use never pays extra."""
    builder = PackBuilder(KEYS.data_key, KEYS.id_key)
    for i in range(500):
        plaintext = bytes([i % 256])  # 1-byte chunks: the smallest sealed blob
        bid = envelope.blob_id(KEYS.id_key, plaintext + i.to_bytes(2, "big"))
        builder.add(bid, BlobKind.DATA, envelope.seal(KEYS.data_key, BlobKind.DATA, bid, plaintext))
    finished = builder.finish()
    user, _ = _account(db, "a@example.org")
    pack = PackId.random()
    entries = [BlobLocation(b.blob_id, pack, b.offset, b.length) for b in finished.blobs]
    assert min(b.length for b in finished.blobs) > PACK_ENTRY_CHARGE
    db.add_pack(user, pack, len(finished.data), entries, len(finished.data), NOW)
    assert db.user_by_id(user).used_bytes == len(finished.data)


def test_refs_per_account_are_capped(db: Metadata, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "MAX_REFS", 3)
    alice, alice_dev = _account(db, "alice@example.org")
    bob, bob_dev = _account(db, "bob@example.org")
    _pack(db, alice, [_blob(1)])
    _pack(db, bob, [_blob(2)])
    for i in range(3):
        db.update_ref(alice, f"r-{i}", 0, _blob(1), _writer(alice_dev), NOW)
    with pytest.raises(
        QuotaExceeded,
        match=r"^too many refs: this account has 3, the most this server allows is 3$",
    ):
        db.update_ref(alice, "r-3", 0, _blob(1), _writer(alice_dev), NOW)
    db.update_ref(alice, "r-0", 1, _blob(1), _writer(alice_dev), NOW)  # moving a ref still works
    db.update_ref(bob, "r-0", 0, _blob(2), _writer(bob_dev), NOW)  # per account
    assert [r.name for r in db.list_refs(alice)] == ["r-0", "r-1", "r-2"]


def test_ref_names_are_at_most_200_characters(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(1)])
    db.update_ref(user, "r" * 200, 0, _blob(1), _writer(dev), NOW)
    for name in ("r" * 201, ""):
        with pytest.raises(UsageError, match=r"^a ref name is 1 to 200 characters$"):
            db.update_ref(user, name, 0, _blob(1), _writer(dev), NOW)


# ---------------------------------------------------------------- a full disk


def _fill(db: Metadata) -> None:
    """Let this thread's connection grow the file by no more than a page or two:
    SQLite then fails a write with SQLITE_FULL, as on a full disk."""
    conn = db.connection()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + 1:d}")


def test_a_full_database_is_rolled_back_and_reported_as_enospc(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    first = _pack(db, user, [_blob(1)])
    db.update_ref(user, "r", 0, _blob(1), _writer(dev), NOW)
    _fill(db)
    pack = PackId.random()
    many = [BlobLocation(_blob(i), pack, i, 1) for i in range(2, 5000)]
    with pytest.raises(OSError, match=DISK_FULL) as caught:
        db.add_pack(user, pack, 5000, many, 0, NOW)
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno {errno.ENOSPC}] {DISK_FULL}"
    # Rolled back, and reads go on.
    assert db.pack_size(user, pack) is None
    assert _locations(db, user, [_blob(2)]) == []
    assert db.user_by_id(user).used_bytes == 1000
    assert db.pack_size(user, first) == 1000
    assert [r.name for r in db.list_refs(user)] == ["r"]
    db.touch_device(dev, NOW + 60)  # best effort: no error on a full disk
    # With room again, the same write succeeds on the same connection.
    db.connection().execute("PRAGMA max_page_count = 1073741823")
    db.add_pack(user, pack, 5000, many, 0, NOW)
    assert db.pack_size(user, pack) == 5000


def test_other_database_errors_are_not_called_a_full_disk(db: Metadata) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table"), db.transaction() as c:
        c.execute("INSERT INTO no_such_table VALUES (1)")
    assert not db.connection().in_transaction


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.root
def test_a_really_full_file_system(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "512k") as small:
        db = Metadata.open(small / "metadata.db")
        try:
            user, dev = _account(db, "a@example.org")
            _pack(db, user, [_blob(1)])
            with pytest.raises(OSError, match=DISK_FULL):
                for n in range(1000):
                    pack = PackId.random()
                    blobs = [BlobLocation(_blob(n * 100 + i + 2), pack, i, 1) for i in range(100)]
                    db.add_pack(user, pack, 100, blobs, 0, NOW)
            assert not db.connection().in_transaction
            used = db.user_by_id(user).used_bytes
            assert used == 1000 + n * 100 * PACK_ENTRY_CHARGE  # the failed pack is not counted
            assert _locations(db, user, [_blob(1)])[0].length == 1000
            db.touch_device(dev, NOW + 60)
        finally:
            db.close()


def test_blobs_and_packs_are_scoped_to_their_account(db: Metadata) -> None:
    alice, _ = _account(db, "alice@example.org")
    bob, _ = _account(db, "bob@example.org")
    pack = _pack(db, alice, [_blob(1)])
    assert _locations(db, bob, [_blob(1)]) == []
    assert db.pack_size(bob, pack) is None


# ---------------------------------------------------------------- refs


def test_ref_compare_and_swap(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(1), _blob(2)])
    ref = db.update_ref(user, "backup:home", 0, _blob(1), _writer(dev), NOW)
    assert (ref.version, ref.commit_id, ref.updated_by_device) == (1, _blob(1), dev)
    with pytest.raises(Conflict, match=r"ref changed concurrently \(now at version 1\)"):
        db.update_ref(user, "backup:home", 0, _blob(2), _writer(dev), NOW)
    with pytest.raises(Conflict):
        db.update_ref(user, "backup:home", 2, _blob(2), _writer(dev), NOW)
    ref = db.update_ref(user, "backup:home", 1, _blob(2), _writer(dev), NOW + 1)
    assert (ref.version, ref.commit_id, ref.updated_at) == (2, _blob(2), NOW + 1)
    assert db.get_ref(user, "backup:home") == ref


def test_a_ref_cannot_point_at_a_missing_commit(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    with pytest.raises(NotFound, match="not stored"):
        db.update_ref(user, "r", 0, _blob(9), _writer(dev), NOW)
    assert db.get_ref(user, "r") is None


def test_concurrent_compare_and_swap_has_one_winner(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(i) for i in range(8)])
    db.update_ref(user, "sync", 0, _blob(0), _writer(dev), NOW)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def contender(i: int) -> None:
        barrier.wait()
        try:
            db.update_ref(user, "sync", 1, _blob(i), _writer(dev), NOW)
            results.append("won")
        except Conflict:
            results.append("lost")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    ref = db.get_ref(user, "sync")
    assert ref is not None and ref.version == 2


def test_refs_are_scoped_to_their_account(db: Metadata) -> None:
    alice, alice_dev = _account(db, "alice@example.org")
    bob, bob_dev = _account(db, "bob@example.org")
    _pack(db, alice, [_blob(1)])
    _pack(db, bob, [_blob(2)])
    db.update_ref(alice, "same-name", 0, _blob(1), _writer(alice_dev), NOW)
    assert db.get_ref(bob, "same-name") is None
    db.update_ref(bob, "same-name", 0, _blob(2), _writer(bob_dev), NOW)  # its own, at version 1
    # Bob cannot point his ref at Alice's commit: he does not hold that blob.
    with pytest.raises(NotFound):
        db.update_ref(bob, "same-name", 1, _blob(1), _writer(bob_dev), NOW)
    assert [r.commit_id for r in db.list_refs(alice)] == [_blob(1)]
    assert [r.commit_id for r in db.list_refs(bob)] == [_blob(2)]


def test_list_refs_by_prefix(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(1)])
    for name in ("backup:a", "backup:b", "sync:x"):
        db.update_ref(user, name, 0, _blob(1), _writer(dev), NOW)
    assert [r.name for r in db.list_refs(user, "backup:")] == ["backup:a", "backup:b"]
    assert len(db.list_refs(user)) == 3


# ---------------------------------------------------------------- administration


def test_admin_updates(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    db.set_quota("a@example.org", 1000)
    db.set_disabled("a@example.org", True)
    u = db.user_by_id(user)
    assert (u.quota_bytes, u.disabled) == (1000, True)
    db.set_quota("a@example.org", None)
    [summary] = db.list_users()
    assert (summary.quota_bytes, summary.disabled, summary.devices) == (None, True, 1)
    with pytest.raises(NotFound):
        db.set_disabled("nobody@example.org", True)


@pytest.mark.parametrize(
    ("code", "free", "full"),
    [
        (sqlite3.SQLITE_FULL, 10**12, True),
        (778, 0, True),  # SQLITE_IOERR_WRITE on a file system with no room left
        (778, 10**12, False),  # … with room: some other I/O error
        (sqlite3.SQLITE_CORRUPT, 0, False),
        (None, 0, False),  # raised by the sqlite3 module itself
    ],
)
def test_which_errors_mean_a_full_disk(
    code: int | None, free: int, full: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite does not pass ENOSPC on for every write it makes (the WAL index, a
    truncation): an I/O error counts as a full disk when the file system is full."""
    err = sqlite3.OperationalError("disk I/O error")
    if code is not None:
        err.sqlite_errorcode = code
    room = os.statvfs_result((4096, 4096, 1000, free // 4096, free // 4096, 10, 5, 5, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _path: room)
    assert metadata._is_disk_full(err, tmp_path / "metadata.db") is full


def _writer(device_id: int, generation: int | None = 0) -> RefWrite:
    return RefWrite(device_id, by_manage=False, append_only=False, gc_generation=generation)


def _locations(db: Metadata, user: int, ids: list[BlobId]) -> list[BlobLocation]:
    return db.find_blobs(user, ids)[0]
