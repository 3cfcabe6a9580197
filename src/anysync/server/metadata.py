"""SQLite metadata: accounts, devices, invites, each account's pack index and refs.

The schema lives in numbered files under sql/ and is versioned with PRAGMA
user_version; `Metadata.open` applies the files the database has not seen yet, each in
one transaction. Every method that touches account data takes the account's row ID
(`user`), so nothing here can read across accounts by accident.

Threads: one connection per thread (gRPC runs handlers on a pool), WAL so readers never
wait for the writer. Writes that must be atomic run in `transaction()`, which begins
IMMEDIATE: it takes the write lock up front, so a read-check-write sequence (the ref
compare-and-swap, the quota check) cannot interleave with another writer.

A full disk: a write that cannot grow the database is rolled back and raised as
OSError(ENOSPC, DISK_FULL), the error a full object store gives; reads go on working.

Metadata counts toward the quota too (issue #12): a pack is charged at least
PACK_ENTRY_CHARGE bytes per index entry (`pack_charge`), a pack carries at most
MAX_PACK_ENTRIES entries, and an account at most MAX_REFS refs.
"""

from __future__ import annotations

import errno
import importlib.resources
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from anysync.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    UsageError,
)
from anysync.server.config import format_size
from anysync.types import BlobId, BlobLocation, KdfParams, PackId, Ref

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
_SQL_BATCH = 500  # ids per "IN (…)" query, well below SQLite's variable limit

DISK_FULL = "the server is out of disk space"
# An SQLITE_IOERR_* counts as a full disk when less than this is left for the server.
_NEARLY_FULL = 1 << 20

# What a pack costs in quota: its size, but at least this much per index entry (and
# at least this much for a pack without entries). An index row takes about 70 bytes
# of the database, a pack row about 35: with a 5 MiB quota an account can make at most
# 20,480 index rows, where 1-byte packs of 150,000 entries each used to be free. A
# current client never pays more than the pack's size: each of its blobs is an
# envelope of version 2, at least 33 + 512 + 16 = 561 bytes (docs/design.md §4.2).
PACK_ENTRY_CHARGE = 256
# Index entries of one pack. A current client's pack is about 16 MiB (client/repo/
# pack.py TARGET_SIZE) plus at most one 8 MiB chunk, so at most ~45,000 blobs of 561 bytes.
MAX_PACK_ENTRIES = 100_000
# Refs of one account: one per backup source (host and set of paths) and one per sync
# folder. A hundred devices with fifty sources each stay well below; 10,000 names of
# up to MAX_REF_NAME characters take at most about 3 MB of the database.
MAX_REFS = 10_000
MAX_REF_NAME = 200  # characters; the client's names have 34


@dataclass(frozen=True, slots=True)
class User:
    id: int  # row ID: what every other table refers to
    user_id: str  # client-chosen, 32 hex digits
    email: str
    kdf: KdfParams
    login_hash: bytes
    login_hash_salt: bytes
    login_hash_params: str
    master_keys: bytes
    disabled: bool
    quota_bytes: int | None  # None = the server's default
    used_bytes: int
    created_at: int


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user: int
    name: str
    created_at: int
    last_seen_at: int | None
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class NewAccount:
    user_id: str
    email: str
    kdf: KdfParams
    login_hash: bytes
    login_hash_salt: bytes
    login_hash_params: str
    master_keys: bytes


@dataclass(frozen=True, slots=True)
class NewDevice:
    name: str
    public_key: bytes
    token_hash: bytes


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One line of `anysync-server user list`."""

    email: str
    user_id: str
    devices: int  # not revoked
    used_bytes: int
    quota_bytes: int | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class Invite:
    code_hash: bytes
    created_at: int
    expires_at: int
    used_at: int | None
    used_by_email: str | None


def check_quota(used: int, adding: int, quota: int) -> None:
    """Raise QuotaExceeded unless `adding` more bytes fit; quota 0 = unlimited."""
    if quota and used + adding > quota:
        raise QuotaExceeded(
            f"quota exceeded: {format_size(used)} of {format_size(quota)} used, "
            f"and this upload needs {format_size(adding)} more"
        )


def pack_charge(size: int, entries: int) -> int:
    """The bytes a pack of `size` bytes with `entries` index entries counts toward its
    account's quota (see PACK_ENTRY_CHARGE)."""
    return max(size, PACK_ENTRY_CHARGE * max(entries, 1))


def check_pack_entries(entries: int) -> None:
    """UsageError if one pack carries more index entries than any client needs."""
    if entries > MAX_PACK_ENTRIES:
        raise UsageError(
            f"a pack may carry at most {MAX_PACK_ENTRIES:,} index entries, not {entries:,}"
        )


class Metadata:
    def __init__(self, path: Path) -> None:
        """Use Metadata.open, which also brings the schema up to date."""
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    @classmethod
    def open(cls, path: Path) -> Metadata:
        db = cls(path)
        try:
            migrate(db._conn())
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the metadata database is closed")
                conn = _connect(self.path)
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for reads outside a transaction (modules with
        tables of their own, such as anysync.server.limiter, read through it)."""
        return self._conn()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All of the block's writes or none. A database that cannot grow (disk full)
        raises OSError(ENOSPC, DISK_FULL), after the rollback."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            _rollback(conn)  # a failed COMMIT may leave the transaction open
            if _is_disk_full(err, self.path):
                raise OSError(errno.ENOSPC, DISK_FULL) from err
            raise

    # ------------------------------------------------------------ accounts

    def user_by_email(self, email: str) -> User | None:
        row = self._conn().execute("SELECT * FROM users WHERE email = ?", (email,))
        return _user(row.fetchone())

    def user_by_id(self, user: int) -> User:
        row = self._conn().execute("SELECT * FROM users WHERE id = ?", (user,))
        found = _user(row.fetchone())
        if found is None:
            raise NotFound(f"no account with row ID {user}")
        return found

    def create_account(
        self, account: NewAccount, device: NewDevice, invite_hash: bytes | None, now: int
    ) -> tuple[User, Device]:
        """Create an account and its first device; with `invite_hash`, consume that
        invite in the same transaction (so one code creates at most one account)."""
        with self.transaction() as db:
            if invite_hash is not None:
                row = db.execute(
                    "SELECT expires_at, used_at FROM invites WHERE code_hash = ?", (invite_hash,)
                ).fetchone()
                if row is None or row["used_at"] is not None or row["expires_at"] <= now:
                    raise PermissionDenied("invalid or used invite code")
            if db.execute("SELECT 1 FROM users WHERE email = ?", (account.email,)).fetchone():
                raise AlreadyExists("an account with this e-mail address already exists")
            if db.execute("SELECT 1 FROM users WHERE user_id = ?", (account.user_id,)).fetchone():
                raise AlreadyExists("this user ID is already taken; generate another one")
            cur = db.execute(
                "INSERT INTO users (user_id, email, kdf_salt, kdf_log_n, kdf_r, kdf_p,"
                " login_hash, login_hash_salt, login_hash_params, master_keys, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    account.user_id,
                    account.email,
                    account.kdf.salt,
                    account.kdf.log_n,
                    account.kdf.r,
                    account.kdf.p,
                    account.login_hash,
                    account.login_hash_salt,
                    account.login_hash_params,
                    account.master_keys,
                    now,
                ),
            )
            user = _rowid(cur)
            dev = _insert_device(db, user, device, now)
            if invite_hash is not None:
                db.execute(
                    "UPDATE invites SET used_at = ?, used_by = ? WHERE code_hash = ?",
                    (now, user, invite_hash),
                )
        return self.user_by_id(user), dev

    def change_login(
        self,
        user: int,
        login_hash: bytes,
        login_hash_salt: bytes,
        login_hash_params: str,
        kdf: KdfParams,
        master_keys: bytes,
    ) -> None:
        """A password change: all of it or nothing, or a client could be left with
        master.keys wrapped under a password the server does not accept."""
        with self.transaction() as db:
            db.execute(
                "UPDATE users SET login_hash = ?, login_hash_salt = ?, login_hash_params = ?,"
                " kdf_salt = ?, kdf_log_n = ?, kdf_r = ?, kdf_p = ?, master_keys = ?"
                " WHERE id = ?",
                (
                    login_hash,
                    login_hash_salt,
                    login_hash_params,
                    kdf.salt,
                    kdf.log_n,
                    kdf.r,
                    kdf.p,
                    master_keys,
                    user,
                ),
            )

    # ------------------------------------------------------------ devices

    def add_device(self, user: int, device: NewDevice, now: int) -> Device:
        with self.transaction() as db:
            return _insert_device(db, user, device, now)

    def caller_for_token(self, token_hash: bytes) -> tuple[User, Device] | None:
        row = (
            self._conn()
            .execute("SELECT * FROM devices WHERE token_hash = ?", (token_hash,))
            .fetchone()
        )
        if row is None:
            return None
        device = _device(row)
        return self.user_by_id(device.user), device

    def touch_device(self, device_id: int, now: int) -> None:
        """Best effort: on a full disk the time stays as it was, so that every
        authenticated call (reads included) does not fail with it."""
        try:
            with self.transaction() as db:
                db.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?", (now, device_id))
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            log.warning("device %d: last-seen time not updated: %s", device_id, DISK_FULL)

    def list_devices(self, user: int) -> list[Device]:
        rows = self._conn().execute("SELECT * FROM devices WHERE user = ? ORDER BY id", (user,))
        return [_device(r) for r in rows]

    def revoke_device(self, user: int, device_id: int, now: int) -> None:
        """Idempotent; NotFound when the device is not one of `user`'s."""
        with self.transaction() as db:
            if not db.execute(
                "SELECT 1 FROM devices WHERE id = ? AND user = ?", (device_id, user)
            ).fetchone():
                raise NotFound(f"this account has no device {device_id}")
            db.execute(
                "UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, device_id),
            )

    # ------------------------------------------------------------ packs and blobs

    def add_pack(
        self,
        user: int,
        pack_id: PackId,
        size: int,
        blobs: Sequence[BlobLocation],
        quota: int,
        now: int,
    ) -> None:
        """Record a stored pack, its index entries and its charge (`pack_charge`),
        atomically. The quota is checked again here: two uploads may both have passed
        the early check."""
        check_pack_entries(len(blobs))
        charge = pack_charge(size, len(blobs))
        with self.transaction() as db:
            (used,) = db.execute("SELECT used_bytes FROM users WHERE id = ?", (user,)).fetchone()
            check_quota(used, charge, quota)
            db.execute(
                "INSERT INTO packs (user, pack_id, size, charged, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (user, pack_id.raw, size, charge, now),
            )
            # OR IGNORE: a blob already indexed elsewhere keeps its first location.
            db.executemany(
                "INSERT OR IGNORE INTO blobs (user, blob_id, pack_id, offset, length)"
                " VALUES (?, ?, ?, ?, ?)",
                [(user, b.blob_id.raw, pack_id.raw, b.offset, b.length) for b in blobs],
            )
            db.execute("UPDATE users SET used_bytes = used_bytes + ? WHERE id = ?", (charge, user))

    def pack_size(self, user: int, pack_id: PackId) -> int | None:
        row = (
            self._conn()
            .execute("SELECT size FROM packs WHERE user = ? AND pack_id = ?", (user, pack_id.raw))
            .fetchone()
        )
        return None if row is None else int(row[0])

    def find_blobs(self, user: int, blob_ids: Sequence[BlobId]) -> list[BlobLocation]:
        found: list[BlobLocation] = []
        conn = self._conn()
        for i in range(0, len(blob_ids), _SQL_BATCH):
            batch = [b.raw for b in blob_ids[i : i + _SQL_BATCH]]
            marks = ",".join("?" * len(batch))  # placeholders only: S608 is a false alarm
            rows = conn.execute(
                f"SELECT * FROM blobs WHERE user = ? AND blob_id IN ({marks})",  # noqa: S608
                (user, *batch),
            )
            found += [
                BlobLocation(BlobId(r["blob_id"]), PackId(r["pack_id"]), r["offset"], r["length"])
                for r in rows
            ]
        return found

    # ------------------------------------------------------------ refs

    def get_ref(self, user: int, name: str) -> Ref | None:
        row = (
            self._conn()
            .execute("SELECT * FROM refs WHERE user = ? AND name = ?", (user, name))
            .fetchone()
        )
        return None if row is None else _ref(row)

    def list_refs(self, user: int, prefix: str = "") -> list[Ref]:
        rows = self._conn().execute(
            "SELECT * FROM refs WHERE user = ? AND substr(name, 1, ?) = ? ORDER BY name",
            (user, len(prefix), prefix),
        )
        return [_ref(r) for r in rows]

    def update_ref(
        self,
        user: int,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        device_id: int,
        now: int,
    ) -> Ref:
        """Compare-and-swap. Conflict unless the ref is at `expected_version` (0: it
        must not exist); NotFound unless the account holds the commit blob, because a
        ref must never point at something that is not stored yet. QuotaExceeded when
        a new ref would be the account's MAX_REFS + 1st."""
        if not 0 < len(name) <= MAX_REF_NAME:
            raise UsageError(f"a ref name is 1 to {MAX_REF_NAME} characters")
        with self.transaction() as db:
            row = db.execute(
                "SELECT version FROM refs WHERE user = ? AND name = ?", (user, name)
            ).fetchone()
            current = 0 if row is None else int(row[0])
            if current != expected_version:
                raise Conflict(f"ref changed concurrently (now at version {current})")
            if row is None:
                (count,) = db.execute(
                    "SELECT count(*) FROM refs WHERE user = ?", (user,)
                ).fetchone()
                if count >= MAX_REFS:
                    raise QuotaExceeded(
                        f"too many refs: this account has {count:,}, "
                        f"the most this server allows is {MAX_REFS:,}"
                    )
            if not db.execute(
                "SELECT 1 FROM blobs WHERE user = ? AND blob_id = ?", (user, commit_id.raw)
            ).fetchone():
                raise NotFound(
                    f"commit {commit_id.short()} is not stored on the server; "
                    "upload its pack before updating the ref"
                )
            ref = Ref(name, commit_id, current + 1, now, device_id)
            db.execute(
                "INSERT INTO refs (user, name, commit_id, version, updated_at, updated_by_device)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user, name) DO UPDATE SET commit_id = excluded.commit_id,"
                " version = excluded.version, updated_at = excluded.updated_at,"
                " updated_by_device = excluded.updated_by_device",
                (user, name, commit_id.raw, ref.version, now, device_id),
            )
        return ref

    # ------------------------------------------------------------ administration

    def add_invite(self, code_hash: bytes, now: int, expires_at: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO invites (code_hash, created_at, expires_at) VALUES (?, ?, ?)",
                (code_hash, now, expires_at),
            )

    def list_invites(self) -> list[Invite]:
        rows = self._conn().execute(
            "SELECT code_hash, invites.created_at, expires_at, used_at, users.email"
            " FROM invites LEFT JOIN users ON users.id = invites.used_by"
            " ORDER BY invites.created_at"
        )
        return [Invite(*r) for r in rows]

    def list_users(self) -> list[UserSummary]:
        rows = self._conn().execute(
            "SELECT email, user_id,"
            " (SELECT count(*) FROM devices WHERE user = users.id AND revoked_at IS NULL),"
            " used_bytes, quota_bytes, disabled"
            " FROM users ORDER BY email"
        )
        return [UserSummary(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def set_disabled(self, email: str, disabled: bool) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE users SET disabled = ? WHERE email = ?", (int(disabled), email)
            )
            _require_one(cur, email)

    def set_quota(self, email: str, quota_bytes: int | None) -> None:
        """quota_bytes None = the server's default, 0 = unlimited."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE users SET quota_bytes = ? WHERE email = ?", (quota_bytes, email)
            )
            _require_one(cur, email)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open. SQLite rolls back by itself after some errors (a full
    disk among them), and then ROLLBACK would fail: nothing is left to undo."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("rollback failed", exc_info=True)


def _is_disk_full(err: sqlite3.Error, path: Path) -> bool:
    """SQLite reports a write that failed with ENOSPC as SQLITE_FULL (also when
    `PRAGMA max_page_count` is reached). Other writes (the WAL index, a truncation)
    fail as SQLITE_IOERR_* without the errno: those count when the file system is
    nearly full."""
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code
    if code == sqlite3.SQLITE_FULL:
        return True
    if code != sqlite3.SQLITE_IOERR:
        return False
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL


def _require_one(cur: sqlite3.Cursor, email: str) -> None:
    if cur.rowcount == 0:
        raise NotFound(f"no account with e-mail {email}")


# ---------------------------------------------------------------- migrations


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every file in sql/, in order."""
    found = []
    for entry in importlib.resources.files("anysync.server").joinpath("sql").iterdir():
        m = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    if [v for v, _, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("server/sql/*.sql must be numbered 0001, 0002, … without gaps")
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks, each in its own transaction; return
    the resulting schema version. Refuses a database from a newer server."""
    steps = migrations()
    latest = steps[-1][0] if steps else 0
    if conn.execute("PRAGMA user_version").fetchone()[0] == latest:
        return latest  # the common case, without taking the write lock
    for version, name, sql in steps:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read inside the transaction: another process may have migrated meanwhile.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > latest:
                raise RuntimeError(
                    f"the metadata database has schema version {current}, newer than this "
                    f"server knows ({latest}); upgrade anysync-server"
                )
            if current < version:
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version:d}")
        except sqlite3.Error as err:
            conn.execute("ROLLBACK")
            raise RuntimeError(f"schema migration {name} failed: {err}") from err
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _statements(sql: str) -> Iterator[str]:
    """Split a migration file into statements. executescript() would COMMIT the
    surrounding transaction, so each statement is executed on its own."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        raise RuntimeError(f"incomplete SQL statement in a migration: {buffer[:60]!r}")


# ---------------------------------------------------------------- rows


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; they are explicit in transaction().
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a pack the server confirmed stays recorded after a power cut.
    conn.execute("PRAGMA synchronous = FULL")
    # One connection per RPC thread: keep each page cache small (the OS caches the file).
    conn.execute("PRAGMA cache_size = -1024")
    return conn


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(
        id=row["id"],
        user_id=row["user_id"],
        email=row["email"],
        kdf=KdfParams(row["kdf_salt"], row["kdf_log_n"], row["kdf_r"], row["kdf_p"]),
        login_hash=row["login_hash"],
        login_hash_salt=row["login_hash_salt"],
        login_hash_params=row["login_hash_params"],
        master_keys=row["master_keys"],
        disabled=bool(row["disabled"]),
        quota_bytes=row["quota_bytes"],
        used_bytes=row["used_bytes"],
        created_at=row["created_at"],
    )


def _device(row: sqlite3.Row) -> Device:
    return Device(
        id=row["id"],
        user=row["user"],
        name=row["name"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        revoked_at=row["revoked_at"],
    )


def _ref(row: sqlite3.Row) -> Ref:
    return Ref(
        name=row["name"],
        commit_id=BlobId(row["commit_id"]),
        version=row["version"],
        updated_at=row["updated_at"],
        updated_by_device=row["updated_by_device"],
    )


def _insert_device(db: sqlite3.Connection, user: int, device: NewDevice, now: int) -> Device:
    cur = db.execute(
        "INSERT INTO devices (user, name, public_key, token_hash, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (user, device.name, device.public_key, device.token_hash, now),
    )
    return Device(_rowid(cur), user, device.name, now, None, None)


def _rowid(cur: sqlite3.Cursor) -> int:
    assert cur.lastrowid is not None
    return cur.lastrowid
