"""Prune's server side without a server (docs/prune-design.md §2-§4): the fence on
UpdateRef, CondemnPacks and its accounting, the reaper and its crash recovery, device
rights and append-only refusals, and the migration of a schema 3 database. A real
Metadata on a temporary SQLite file and a real LocalStore."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.errors import (
    AppendOnly,
    ClientTooOld,
    GcRaced,
    NeedsManage,
    NotFound,
    QuotaExceeded,
    RateLimited,
    RefsChanged,
    UsageError,
    WrongPassword,
)
from anysync.server import auth, packs
from anysync.server.accounts import Accounts, Caller
from anysync.server.config import ServerConfig
from anysync.server.gc import Reaper
from anysync.server.limiter import Backoff, LoginLimiter
from anysync.server.metadata import CONDEMNED, LIVE, Metadata, NewDevice
from anysync.server.notify import RefNotifier
from anysync.server.refs import Refs
from anysync.server.storage import EntryIn, PackHeader, Storage
from anysync.store import LocalStore
from anysync.types import PackId
from tests.unit.test_server_metadata import migrate_to
from tests.unit.test_server_storage import caller as new_account
from tests.unit.test_server_storage import refreshed

SECRET = b"s" * 32
PASSWORD = b"p" * auth.LOGIN_SECRET_SIZE


@pytest.fixture(autouse=True)
def _weak_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def make(
    db: Metadata,
    store: LocalStore,
    tmp_path: Path,
    grace: int = 3600,
    min_age: int = 0,
    quota: int = 0,
) -> Storage:
    config = ServerConfig(
        default_quota=quota,
        gc_grace_seconds=grace,
        gc_min_pack_age_seconds=min_age,
        gc_maintenance_headroom=10_000,
    )
    return Storage(config, db, store, SECRET, tmp_path / "spool")


def device(db: Metadata, owner: Caller, rights: str, elevated_until: int | None = None) -> Caller:
    """Another device of `owner`'s account."""
    dev = db.add_device(
        owner.user.id, NewDevice("phone", os.urandom(32), os.urandom(32)), 1, rights
    )
    if elevated_until is not None:
        db.set_elevated_until(dev.id, elevated_until)
    [found] = [d for d in db.list_devices(owner.user.id) if d.id == dev.id]
    return Caller(refreshed(db, owner).user, found)


def upload(
    storage: Storage, c: Caller, blob: bytes, size: int = 1000, maintenance: bool = False
) -> PackId:
    data = os.urandom(size)
    head = PackHeader(
        size, hashlib.sha256(data).digest(), [EntryIn(blob, 0, size)], maintenance=maintenance
    )
    u = storage.start_upload(c, head)
    u.write(data)
    return u.finish().pack_id


def counters(db: Metadata, c: Caller) -> tuple[int, int]:
    user = db.user_by_id(c.user.id)
    return user.gc_generation, user.ref_seq


def blob(n: int) -> bytes:
    return bytes([n]) * 32


def object_path(store: LocalStore, c: Caller, pack: PackId) -> Path:
    return store.root / packs.pack_key(SECRET, c.user.user_id, pack)


# ---------------------------------------------------------------- the fence


def test_update_ref_is_fenced_by_the_generation(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    refs = Refs(db, RefNotifier())
    alice = new_account(db)
    upload(storage, alice, blob(1))
    doomed = upload(storage, alice, blob(2))
    refs.update_ref(alice, "r", 0, blob(1), None)  # generation 0: an old client may write
    _, seq = counters(db, alice)
    storage.condemn_packs(alice, [doomed.raw], 0, seq)

    with pytest.raises(ClientTooOld, match="upgrade anysync"):
        refs.update_ref(alice, "r", 1, blob(1), None)
    with pytest.raises(GcRaced):
        refs.update_ref(alice, "r", 1, blob(1), 0)  # planned before the condemnation
    assert refs.update_ref(alice, "r", 1, blob(1), 1).version == 2
    assert counters(db, alice) == (1, 2)


def test_condemned_blobs_leave_find_blobs_and_cannot_be_committed(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, grace=3600)
    refs = Refs(db, RefNotifier())
    alice = new_account(db)
    kept = upload(storage, alice, blob(1))
    doomed = upload(storage, alice, blob(1))  # a second copy of the same blob
    upload_only = upload(storage, alice, blob(2))
    assert {loc.pack_id for loc in storage.find_blobs(alice, [blob(1)]).locations} == {
        kept,
        doomed,
    }
    storage.condemn_packs(alice, [doomed.raw, upload_only.raw], 0, 0)

    found = storage.find_blobs(alice, [blob(1), blob(2)])
    assert [loc.pack_id for loc in found.locations] == [kept]
    assert found.gc_generation == 1
    with pytest.raises(NotFound, match="not stored"):
        refs.update_ref(alice, "r", 0, blob(2), 1)
    # Until it is reaped, a condemned pack can still be read (reads in flight).
    assert b"".join(storage.read_pack(alice, doomed.raw, 0, 0))


# ---------------------------------------------------------------- CondemnPacks


def test_condemn_moves_the_charge_out_of_the_quota(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, quota=2500)
    alice = new_account(db)
    first = upload(storage, alice, blob(1))
    upload(storage, alice, blob(2))
    with pytest.raises(QuotaExceeded):
        upload(storage, refreshed(db, alice), blob(3))

    result = storage.condemn_packs(alice, [first.raw], 0, 0)
    assert (result.condemned.condemned, result.condemned.condemned_bytes) == (1, 1000)
    assert result.condemned.gc_generation == 1
    assert result.reap_at >= time.time() + 3600 - 5
    user = db.user_by_id(alice.user.id)
    assert (user.used_bytes, user.condemned_bytes, user.gc_generation) == (1000, 1000, 1)
    upload(storage, refreshed(db, alice), blob(3))  # fits again at once

    again = storage.condemn_packs(alice, [first.raw], 1, 0)  # already condemned: skipped
    assert (again.condemned.condemned, again.condemned.gc_generation) == (0, 1)
    assert db.user_by_id(alice.user.id).condemned_bytes == 1000


def test_condemn_refuses_on_changed_counters_and_unknown_packs(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    refs = Refs(db, RefNotifier())
    alice, bob = new_account(db), new_account(db, "b@example.org")
    pack = upload(storage, alice, blob(1))
    bobs = upload(storage, bob, blob(1))
    refs.update_ref(alice, "r", 0, blob(1), 0)

    with pytest.raises(RefsChanged):
        storage.condemn_packs(alice, [pack.raw], 0, 0)
    with pytest.raises(GcRaced):
        storage.condemn_packs(alice, [pack.raw], 5, 1)
    with pytest.raises(NotFound):  # another account's pack is unknown here
        storage.condemn_packs(alice, [pack.raw, bobs.raw], 0, 1)
    with pytest.raises(UsageError):
        storage.condemn_packs(alice, [b"short"], 0, 1)
    # Nothing of a refused call happened.
    assert counters(db, alice) == (0, 1)
    assert [loc.pack_id for loc in storage.find_blobs(alice, [blob(1)]).locations] == [pack]


def test_young_packs_are_skipped(db: Metadata, store: LocalStore, tmp_path: Path) -> None:
    storage = make(db, store, tmp_path, min_age=3600)
    alice = new_account(db)
    pack = upload(storage, alice, blob(1))
    result = storage.condemn_packs(alice, [pack.raw], 0, 0).condemned
    assert (result.condemned, result.skipped_young, result.gc_generation) == (0, 1, 0)
    assert storage.find_blobs(alice, [blob(1)]).locations


def test_condemn_needs_manage_and_refuses_append_only(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    alice = new_account(db)
    pack = upload(storage, alice, blob(1))
    with pytest.raises(NeedsManage):
        storage.condemn_packs(device(db, alice, "write"), [pack.raw], 0, 0)
    with pytest.raises(AppendOnly):
        storage.condemn_packs(device(db, alice, "append"), [pack.raw], 0, 0)
    elevated = device(db, alice, "write", elevated_until=int(time.time()) + 60)
    assert storage.condemn_packs(elevated, [pack.raw], 0, 0).condemned.condemned == 1


def test_maintenance_uploads_of_manage_devices_may_pass_the_quota(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, quota=1500)  # headroom 10,000
    alice = new_account(db)
    upload(storage, alice, blob(1))
    writer = device(db, alice, "write")
    with pytest.raises(QuotaExceeded):
        upload(storage, writer, blob(2), maintenance=True)  # ignored without manage
    with pytest.raises(QuotaExceeded):
        upload(storage, refreshed(db, alice), blob(2))  # not a maintenance upload
    upload(storage, refreshed(db, alice), blob(2), maintenance=True)
    assert db.user_by_id(alice.user.id).used_bytes == 2000


# ---------------------------------------------------------------- the reaper


def test_at_grace_zero_condemned_packs_are_deleted_at_once(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, grace=0)
    alice = new_account(db)
    kept = upload(storage, alice, blob(1))
    doomed = upload(storage, alice, blob(2))
    storage.condemn_packs(alice, [doomed.raw], 0, 0)

    assert not object_path(store, alice, doomed).exists()
    assert object_path(store, alice, kept).exists()
    with pytest.raises(NotFound):
        storage.read_pack(alice, doomed.raw, 0, 0)
    user = db.user_by_id(alice.user.id)
    assert (user.used_bytes, user.condemned_bytes) == (1000, 0)
    rows = db.connection().execute("SELECT count(*) FROM blob_locations").fetchone()[0]
    assert rows == 1


def test_packs_are_reaped_only_after_the_grace_period(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path, grace=3600)
    alice = new_account(db)
    doomed = upload(storage, alice, blob(1))
    upload(storage, alice, blob(2))  # live: never reaped
    storage.condemn_packs(alice, [doomed.raw], 0, 0)
    reaper = Reaper(db, store, SECRET, grace_seconds=3600)
    assert reaper.run() == 0
    assert object_path(store, alice, doomed).exists()
    assert reaper.run(now=time.time() + 3600) == 1
    assert not object_path(store, alice, doomed).exists()
    assert len(store_objects(store)) == 1


def store_objects(store: LocalStore) -> list[str]:
    return list(store.list(""))


@pytest.mark.parametrize("crash_after", ["step 1", "step 2"])
def test_a_reap_interrupted_by_a_crash_is_finished_by_the_next_run(
    db: Metadata, store: LocalStore, tmp_path: Path, crash_after: str
) -> None:
    storage = make(db, store, tmp_path, grace=3600)
    alice = new_account(db)
    doomed = upload(storage, alice, blob(1))
    storage.condemn_packs(alice, [doomed.raw], 0, 0)
    # The first run dies after step 1 (state reaping) or step 2 (object deleted too).
    db.start_reaping(int(time.time()))
    if crash_after == "step 2":
        [pack] = db.reaping()
        store.delete(packs.pack_key(SECRET, pack.user_id, pack.pack_id))
    assert db.connection().execute("SELECT state FROM packs").fetchone()[0] == 2

    # A restart: the grace period no longer matters for packs already being reaped.
    counted: list[int] = []

    class Counter:
        def add_reaped(self, charged: int) -> None:
            counted.append(charged)

    reaper = Reaper(db, store, SECRET, grace_seconds=10**9, counter=Counter())
    assert reaper.run() == 1
    assert reaper.run() == 0  # idempotent
    assert counted == [1000]
    assert not object_path(store, alice, doomed).exists()
    assert db.connection().execute("SELECT count(*) FROM packs").fetchone()[0] == 0
    assert db.user_by_id(alice.user.id).condemned_bytes == 0


# ---------------------------------------------------------------- listings


def test_list_packs_reads_counters_and_packs_in_one_transaction(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    alice = new_account(db)
    live = upload(storage, alice, blob(1))
    doomed = upload(storage, alice, blob(2))
    storage.condemn_packs(alice, [doomed.raw], 0, 0)

    listing = storage.list_packs(alice, include_entries=True, include_condemned=False)
    try:
        upload(storage, alice, blob(3))  # after the listing began: not in it
        [only] = listing.batch(1 << 20)
        assert listing.batch(1 << 20) == []
    finally:
        listing.close()
    assert (listing.gc_generation, listing.ref_seq) == (1, 0)
    assert (only.pack_id, only.state, only.size) == (live, LIVE, 1000)
    assert [e.blob_id.raw for e in only.entries] == [blob(1)]

    listing = storage.list_packs(alice, include_entries=False, include_condemned=True)
    try:
        rows = listing.batch(1)  # a tiny budget: one pack per batch
        rows += listing.batch(1) + listing.batch(1)
    finally:
        listing.close()
    assert len(rows) == 3
    [condemned] = [r for r in rows if r.pack_id == doomed]
    assert condemned.state == CONDEMNED and condemned.condemned_at
    assert all(r.entries == [] for r in rows)


def test_ref_history_keeps_every_version_and_pages_by_seq(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    refs = Refs(db, RefNotifier())
    alice = new_account(db)
    writer = device(db, alice, "write")
    upload(storage, alice, blob(1))
    upload(storage, alice, blob(2))
    refs.update_ref(alice, "a", 0, blob(1), 0)
    refs.update_ref(writer, "b", 0, blob(2), 0)
    refs.update_ref(alice, "a", 1, blob(2), 0)

    versions, seq = refs.history(alice, "", 0, 0)
    assert seq == 3
    assert [(v.name, v.version, v.seq, v.by_manage) for v in versions] == [
        ("a", 1, 1, True),
        ("b", 1, 2, False),
        ("a", 2, 3, True),
    ]
    assert [v.seq for v in refs.history(alice, "", 1, 1)[0]] == [2]
    assert [v.version for v in refs.history(alice, "a", 0, 0)[0]] == [1, 2]
    with pytest.raises(UsageError):
        refs.history(alice, "", 0, 10_001)


# ---------------------------------------------------------------- rights


def test_append_only_devices_add_but_never_rewind_or_manage(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    refs = Refs(db, RefNotifier())
    accounts = Accounts(ServerConfig(), db, SECRET, LoginLimiter(db))
    alice = new_account(db)
    appender = device(db, alice, "append")
    upload(storage, appender, blob(1))
    upload(storage, appender, blob(2))
    refs.update_ref(appender, "r", 0, blob(1), 0)
    refs.update_ref(appender, "r", 1, blob(2), 0)
    with pytest.raises(AppendOnly):
        refs.update_ref(appender, "r", 2, blob(1), 0)  # back to version 1
    refs.update_ref(alice, "r", 2, blob(1), 0)  # a write (here manage) device may

    with pytest.raises(AppendOnly):
        accounts.set_device_rights(appender, appender.device.id, "append")
    with pytest.raises(AppendOnly):
        accounts.elevate(appender, PASSWORD, "192.0.2.7")
    with pytest.raises(AppendOnly):
        accounts.revoke_device(appender, alice.device.id)
    accounts.revoke_device(appender, appender.device.id)  # itself: allowed


def test_rights_are_raised_by_manage_and_lowered_by_write(db: Metadata) -> None:
    accounts = Accounts(ServerConfig(), db, SECRET, LoginLimiter(db))
    alice = new_account(db)
    assert alice.device.rights == "manage"  # the account's first device
    writer = device(db, alice, "write")
    other = device(db, alice, "write")

    with pytest.raises(NeedsManage):
        accounts.set_device_rights(writer, other.device.id, "manage")
    accounts.set_device_rights(writer, other.device.id, "append")  # lowering is open
    accounts.set_device_rights(alice, other.device.id, "manage")
    with pytest.raises(UsageError):
        accounts.set_device_rights(alice, other.device.id, "root")
    bob = new_account(db, "b@example.org")
    with pytest.raises(NotFound):
        accounts.set_device_rights(alice, bob.device.id, "append")
    rights = {d.id: d.rights for d in db.list_devices(alice.user.id)}
    assert rights[other.device.id] == "manage"


def test_elevate_checks_the_password_and_shares_the_failure_limit(db: Metadata) -> None:
    config = ServerConfig(gc_elevation_seconds=900)
    limits = LoginLimiter(db, login=Backoff(2, 30, 900))
    accounts = Accounts(config, db, SECRET, limits)
    login_hash, salt, params = auth.hash_login_secret(PASSWORD)
    owner = new_account(db)
    with db.transaction() as conn:
        conn.execute(
            "UPDATE users SET login_hash = ?, login_hash_salt = ?, login_hash_params = ?",
            (login_hash, salt, params),
        )
    writer = device(db, owner, "write")
    assert not writer.manages()

    until = accounts.elevate(writer, PASSWORD, "192.0.2.7")
    assert time.time() + 890 < until <= time.time() + 900
    [dev] = [d for d in db.list_devices(owner.user.id) if d.id == writer.device.id]
    assert dev.manages(time.time()) and not dev.manages(until)

    wrong = b"w" * auth.LOGIN_SECRET_SIZE
    for _ in range(2):
        with pytest.raises(WrongPassword):
            accounts.elevate(writer, wrong, "192.0.2.8")
    with pytest.raises(RateLimited):  # the log-in limit applies
        accounts.elevate(writer, PASSWORD, "192.0.2.8")


# ---------------------------------------------------------------- migration


def test_a_schema_3_database_with_data_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_to(conn, 3)
    for account in (1, 2):
        conn.execute(
            "INSERT INTO users (id, user_id, email, kdf_salt, kdf_log_n, kdf_r, kdf_p,"
            " login_hash, login_hash_salt, login_hash_params, master_keys, used_bytes,"
            " created_at) VALUES (?, ?, ?, x'00', 17, 8, 1, x'00', x'00', 'p', x'00', 10, 0)",
            (account, f"u{account}", f"{account}@example.org"),
        )
    # Account 1: device 1 revoked, so device 2 is the oldest in use; device 3 later.
    for dev, owner, revoked in ((1, 1, 5), (2, 1, None), (3, 1, None), (4, 2, None)):
        conn.execute(
            "INSERT INTO devices (id, user, name, public_key, token_hash, created_at,"
            " revoked_at) VALUES (?, ?, 'd', x'00', ?, 0, ?)",
            (dev, owner, bytes([dev]), revoked),
        )
    conn.execute("INSERT INTO packs VALUES (1, x'01', 10, 0, 10)")
    conn.execute("INSERT INTO blobs VALUES (1, ?, x'01', 0, 10)", (blob(0xAA),))
    conn.execute("INSERT INTO blobs VALUES (1, ?, x'01', 0, 5)", (blob(0xBB),))
    conn.execute("INSERT INTO refs VALUES (1, 'r1', ?, 4, 100, 2)", (blob(0xAA),))
    conn.execute("INSERT INTO refs VALUES (1, 'r0', ?, 1, 90, 3)", (blob(0xBB),))
    conn.close()

    db = Metadata.open(path)
    try:
        conn2 = db.connection()
        assert conn2.execute("PRAGMA user_version").fetchone()[0] == 5
        assert [
            tuple(r)
            for r in conn2.execute(
                "SELECT blob_id, pack_id, offset, length FROM blob_locations ORDER BY blob_id"
            )
        ] == [(blob(0xAA), b"\x01", 0, 10), (blob(0xBB), b"\x01", 0, 5)]
        rights = {r[0]: r[1] for r in conn2.execute("SELECT id, rights FROM devices")}
        assert rights == {1: "write", 2: "manage", 3: "write", 4: "manage"}
        assert conn2.execute("SELECT state FROM packs").fetchone()[0] == LIVE
        user = db.user_by_id(1)
        assert (user.gc_generation, user.ref_seq, user.condemned_bytes) == (0, 2, 0)
        versions, seq = db.ref_history(1, "", 0, 100)
        assert seq == 2
        assert [(v.name, v.version, v.seq, v.device_id) for v in versions] == [
            ("r0", 1, 1, 3),
            ("r1", 4, 2, 2),
        ]
    finally:
        db.close()


# ---------------------------------------------------------------- RepairIndex


def test_repair_index_makes_the_rows_what_the_header_lists(
    db: Metadata, store: LocalStore, tmp_path: Path
) -> None:
    storage = make(db, store, tmp_path)
    alice = new_account(db)
    pack = upload(storage, alice, blob(1), size=1000)  # indexed: blob 1 at 0+1000
    header = [EntryIn(blob(2), 0, 600), EntryIn(blob(3), 600, 400)]

    with pytest.raises(NeedsManage):
        storage.repair_index(device(db, alice, "write"), pack.raw, header, 0)
    with pytest.raises(AppendOnly):
        storage.repair_index(device(db, alice, "append"), pack.raw, header, 0)
    with pytest.raises(UsageError):  # outside the pack
        storage.repair_index(alice, pack.raw, [EntryIn(blob(2), 900, 200)], 0)
    with pytest.raises(NotFound):
        storage.repair_index(alice, PackId.random().raw, header, 0)
    with pytest.raises(GcRaced):
        storage.repair_index(alice, pack.raw, header, 3)

    done = storage.repair_index(alice, pack.raw, header, 0)
    assert (done.added, done.removed, done.gc_generation) == (2, 1, 1)
    found = storage.find_blobs(alice, [blob(1), blob(2), blob(3)])
    assert sorted((loc.blob_id.raw, loc.offset) for loc in found.locations) == [
        (blob(2), 0),
        (blob(3), 600),
    ]
    # Adding only (nothing removed) leaves the generation alone.
    again = storage.repair_index(alice, pack.raw, [*header, EntryIn(blob(4), 0, 10)], 1)
    assert (again.added, again.removed, again.gc_generation) == (1, 0, 1)
    assert db.user_by_id(alice.user.id).used_bytes == 1000  # 3 entries still cost its size
