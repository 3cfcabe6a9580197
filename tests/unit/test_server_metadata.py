"""Server metadata on a real SQLite file: migrations, compare-and-swap, account scoping."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.errors import AlreadyExists, Conflict, NotFound, PermissionDenied, QuotaExceeded
from anysync.server.metadata import Metadata, NewAccount, NewDevice, migrations
from anysync.types import BlobId, BlobLocation, KdfParams, PackId

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
    locations = [BlobLocation(b, pack, 100 * i, 100) for i, b in enumerate(blob_ids)]
    db.add_pack(user, pack, 100 * len(blob_ids), locations, quota, NOW)
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
        assert {"users", "devices", "invites", "packs", "blobs", "refs"} <= tables
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


def test_foreign_keys_are_enforced(db: Metadata) -> None:
    with pytest.raises(sqlite3.IntegrityError), db.transaction() as conn:
        conn.execute("INSERT INTO packs VALUES (12345, x'00', 1, 0)")  # no such user


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
    assert db.pack_size(user, pack) == 200
    assert db.user_by_id(user).used_bytes == 200
    found = db.find_blobs(user, [_blob(1), _blob(2), _blob(3)])
    assert {(f.blob_id, f.pack_id, f.offset) for f in found} == {
        (_blob(1), pack, 0),
        (_blob(2), pack, 100),
    }


def test_first_location_of_a_blob_wins(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    first = _pack(db, user, [_blob(1)])
    _pack(db, user, [_blob(1)])  # a dedup race: harmless
    [loc] = db.find_blobs(user, [_blob(1)])
    assert loc.pack_id == first


def test_find_blobs_in_large_batches(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    _pack(db, user, [_blob(i) for i in range(0, 2400, 2)])
    found = db.find_blobs(user, [_blob(i) for i in range(2400)])
    assert len(found) == 1200


def test_quota_is_checked_in_the_transaction(db: Metadata) -> None:
    user, _ = _account(db, "a@example.org")
    _pack(db, user, [_blob(1)], quota=250)
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        _pack(db, user, [_blob(2), _blob(3)], quota=250)
    assert db.user_by_id(user).used_bytes == 100
    assert db.find_blobs(user, [_blob(2)]) == []


def test_blobs_and_packs_are_scoped_to_their_account(db: Metadata) -> None:
    alice, _ = _account(db, "alice@example.org")
    bob, _ = _account(db, "bob@example.org")
    pack = _pack(db, alice, [_blob(1)])
    assert db.find_blobs(bob, [_blob(1)]) == []
    assert db.pack_size(bob, pack) is None


# ---------------------------------------------------------------- refs


def test_ref_compare_and_swap(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(1), _blob(2)])
    ref = db.update_ref(user, "backup:home", 0, _blob(1), dev, NOW)
    assert (ref.version, ref.commit_id, ref.updated_by_device) == (1, _blob(1), dev)
    with pytest.raises(Conflict, match=r"ref changed concurrently \(now at version 1\)"):
        db.update_ref(user, "backup:home", 0, _blob(2), dev, NOW)
    with pytest.raises(Conflict):
        db.update_ref(user, "backup:home", 2, _blob(2), dev, NOW)
    ref = db.update_ref(user, "backup:home", 1, _blob(2), dev, NOW + 1)
    assert (ref.version, ref.commit_id, ref.updated_at) == (2, _blob(2), NOW + 1)
    assert db.get_ref(user, "backup:home") == ref


def test_a_ref_cannot_point_at_a_missing_commit(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    with pytest.raises(NotFound, match="not stored"):
        db.update_ref(user, "r", 0, _blob(9), dev, NOW)
    assert db.get_ref(user, "r") is None


def test_concurrent_compare_and_swap_has_one_winner(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(i) for i in range(8)])
    db.update_ref(user, "sync", 0, _blob(0), dev, NOW)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def contender(i: int) -> None:
        barrier.wait()
        try:
            db.update_ref(user, "sync", 1, _blob(i), dev, NOW)
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
    db.update_ref(alice, "same-name", 0, _blob(1), alice_dev, NOW)
    assert db.get_ref(bob, "same-name") is None
    db.update_ref(bob, "same-name", 0, _blob(2), bob_dev, NOW)  # its own, at version 1
    # Bob cannot point his ref at Alice's commit: he does not hold that blob.
    with pytest.raises(NotFound):
        db.update_ref(bob, "same-name", 1, _blob(1), bob_dev, NOW)
    assert [r.commit_id for r in db.list_refs(alice)] == [_blob(1)]
    assert [r.commit_id for r in db.list_refs(bob)] == [_blob(2)]


def test_list_refs_by_prefix(db: Metadata) -> None:
    user, dev = _account(db, "a@example.org")
    _pack(db, user, [_blob(1)])
    for name in ("backup:a", "backup:b", "sync:x"):
        db.update_ref(user, name, 0, _blob(1), dev, NOW)
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
