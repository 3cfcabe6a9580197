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
    AppendOnly,
    ClientTooOld,
    Conflict,
    GcRaced,
    NeedsManage,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RefsChanged,
    UsageError,
)
from anysync.server.config import format_size
from anysync.types import BlobId, BlobLocation, KdfParams, PackId, Ref

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
SQLITE_SOFT_HEAP_LIMIT = 2 << 20  # bytes, for the whole process (see _connect)
_SQL_BATCH = 500  # ids per "IN (…)" query, well below SQLite's variable limit
_IN_BATCH = ",".join("?" * _SQL_BATCH)  # placeholders only: S608 is a false alarm below

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

# Device rights, weakest first (docs/prune-design.md §3): append adds only, write also
# moves refs anywhere, manage also deletes and changes rights.
RIGHTS = ("append", "write", "manage")
# A live location: a copy of a blob in a live pack. Only these answer FindBlobs and
# count as "stored" for UpdateRef; condemned packs can still be read until reaped.
_LIVE_LOCATIONS = (
    "SELECT l.blob_id, l.pack_id, l.offset, l.length FROM blob_locations l"
    " JOIN packs p ON p.user = l.user AND p.pack_id = l.pack_id"
    " WHERE l.user = ? AND p.state = 0"
)
# Pack states: live packs answer FindBlobs and count toward used_bytes; condemned ones
# wait for the grace period; reaping ones are being deleted (finished at start-up).
LIVE, CONDEMNED, REAPING = 0, 1, 2


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
    gc_generation: int = 0
    ref_seq: int = 0
    condemned_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user: int
    name: str
    created_at: int
    last_seen_at: int | None
    revoked_at: int | None
    rights: str = "write"
    elevated_until: int | None = None

    def manages(self, now: float) -> bool:
        """The effective manage right: granted, or a password proof still fresh."""
        return self.rights == "manage" or (self.elevated_until or 0) > now


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
class RefWrite:
    """Who moves a ref, and what the move must be checked against."""

    device_id: int
    by_manage: bool  # the device's effective manage right, kept in ref_history
    append_only: bool  # may not point the ref at a version it had before
    gc_generation: int | None  # of the session's first FindBlobs; None = an old client


@dataclass(frozen=True, slots=True)
class RefVersion:
    name: str
    version: int
    commit_id: BlobId
    seq: int
    device_id: int
    by_manage: bool
    at: int


@dataclass(frozen=True, slots=True)
class PackRow:
    pack_id: PackId
    size: int
    charged: int
    created_at: int
    state: int
    condemned_at: int | None
    entries: list[BlobLocation]


@dataclass(frozen=True, slots=True)
class Condemned:
    """What one CondemnPacks did."""

    gc_generation: int  # after the call
    condemned: int
    skipped_young: int
    condemned_bytes: int  # charge taken out of used_bytes


@dataclass(frozen=True, slots=True)
class Repaired:
    """What one RepairIndex did (a changed location counts as removed and added)."""

    added: int
    removed: int
    gc_generation: int  # after the call


@dataclass(frozen=True, slots=True)
class Reaping:
    """A pack being deleted: its object goes first, then its rows."""

    user: int
    user_id: str
    pack_id: PackId
    charged: int


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


def check_inside_pack(size: int, offset: int, length: int) -> None:
    """UsageError unless an index entry lies inside a pack of `size` bytes."""
    if length == 0 or offset + length > size:
        raise UsageError(
            f"pack entry {offset}+{length} does not lie inside the pack ({size} bytes)"
        )


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
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads that must agree with each other: one read transaction (WAL gives it a
        fixed view of the database and takes no write lock)."""
        conn = self._conn()
        conn.execute("BEGIN")  # deferred: a read transaction from the first SELECT on
        try:
            yield conn
        finally:
            _rollback(conn)  # nothing was written

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
            dev = _insert_device(db, user, device, now, "manage")  # the account's first
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

    def add_device(self, user: int, device: NewDevice, now: int, rights: str = "write") -> Device:
        with self.transaction() as db:
            return _insert_device(db, user, device, now, rights)

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

    def set_device_rights(self, user: int, device_id: int, rights: str, may_raise: bool) -> None:
        """Give one of `user`'s devices `rights`. Raising them (append < write < manage)
        needs `may_raise`, else NeedsManage; lowering is always allowed."""
        if rights not in RIGHTS:
            raise UsageError(f"rights must be one of {', '.join(RIGHTS)}, not {rights!r}")
        with self.transaction() as db:
            row = db.execute(
                "SELECT rights FROM devices WHERE id = ? AND user = ?", (device_id, user)
            ).fetchone()
            if row is None:
                raise NotFound(f"this account has no device {device_id}")
            if RIGHTS.index(rights) > RIGHTS.index(row[0]) and not may_raise:
                raise NeedsManage(
                    f"giving device {device_id} the {rights} right needs the manage right"
                )
            db.execute("UPDATE devices SET rights = ? WHERE id = ?", (rights, device_id))

    def rename_device(self, user: int, device_id: int, name: str) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE devices SET name = ? WHERE id = ? AND user = ?", (name, device_id, user)
            )
            if cur.rowcount == 0:
                raise NotFound(f"this account has no device {device_id}")

    def set_elevated_until(self, device_id: int, until: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE devices SET elevated_until = ? WHERE id = ?", (until, device_id))

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
            # Every copy is a location of its own. OR IGNORE only folds a blob listed
            # twice in one header (the key includes the pack).
            db.executemany(
                "INSERT OR IGNORE INTO blob_locations (user, blob_id, pack_id, offset, length)"
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

    def find_blobs(self, user: int, blob_ids: Sequence[BlobId]) -> tuple[list[BlobLocation], int]:
        """The live locations of these blobs (every copy, each once), and the account's
        gc_generation read in the same transaction: a client that relies on the answer
        sends that generation with its commit (UpdateRef).

        Built for a backup's 10,000 IDs against an index of millions of rows
        (bench/server_index_bench.py, 1.2M rows): the IDs are looked up in sorted
        order, so that consecutive lookups share index pages (a quarter less time than
        in the client's order); rows come back as plain tuples, and each pack's PackId
        is made once. One statement of 10,000 IDs was no faster, and SQLite keeps a
        prepared statement (~2 MiB with that many variables) per pool thread.
        """
        found: list[BlobLocation] = []
        packs: dict[bytes, PackId] = {}
        raw_ids = sorted({b.raw for b in blob_ids})
        with self.snapshot() as conn:
            (generation,) = conn.execute(
                "SELECT gc_generation FROM users WHERE id = ?", (user,)
            ).fetchone()
            for i in range(0, len(raw_ids), _SQL_BATCH):
                batch = _padded(raw_ids[i : i + _SQL_BATCH])
                cur = conn.cursor()
                cur.row_factory = None  # tuples: a sqlite3.Row costs per row
                rows = cur.execute(
                    _LIVE_LOCATIONS + f" AND l.blob_id IN ({_IN_BATCH})", (user, *batch)
                )
                for blob, pack, offset, length in rows:
                    pid = packs.get(pack)
                    if pid is None:
                        pid = packs[pack] = PackId(pack)
                    found.append(BlobLocation(BlobId(blob), pid, offset, length))
        return found, int(generation)

    def list_packs(self, user: int, include_entries: bool, include_condemned: bool) -> PackListing:
        """The account's packs, read in one transaction of a connection of its own
        (close the listing when done)."""
        return PackListing(self.path, user, include_entries, include_condemned)

    def condemn_packs(
        self,
        user: int,
        pack_ids: Sequence[PackId],
        expected: tuple[int, int],
        young_after: int,
        device_id: int,
        now: int,
    ) -> Condemned:
        """Condemn the live packs among `pack_ids` created at or before `young_after`,
        if the account's (gc_generation, ref_seq) is still `expected`: GcRaced or
        RefsChanged otherwise. An unknown pack refuses the whole call (NotFound). Packs
        already condemned and young packs are skipped: fewer deletions are always safe."""
        wanted = {p.raw: p for p in pack_ids}
        with self.transaction() as db:
            generation, seq = db.execute(
                "SELECT gc_generation, ref_seq FROM users WHERE id = ?", (user,)
            ).fetchone()
            if generation != expected[0]:
                raise GcRaced(
                    f"packs were condemned meanwhile (generation {generation}, "
                    f"expected {expected[0]}); plan again"
                )
            if seq != expected[1]:
                raise RefsChanged(
                    f"refs changed meanwhile (ref_seq {seq}, expected {expected[1]}); mark again"
                )
            rows = _packs_by_id(db, user, list(wanted))
            unknown = [p for raw, p in wanted.items() if raw not in rows]
            if unknown:
                raise NotFound(f"no pack {unknown[0]}")
            live = [r for r in rows.values() if r["state"] == LIVE]
            doomed = [r for r in live if r["created_at"] <= young_after]
            charged = sum(int(r["charged"]) for r in doomed)
            for i in range(0, len(doomed), _SQL_BATCH):
                db.executemany(
                    "UPDATE packs SET state = 1, condemned_at = ?, condemned_by = ?"
                    " WHERE user = ? AND pack_id = ?",
                    [(now, device_id, user, r["pack_id"]) for r in doomed[i : i + _SQL_BATCH]],
                )
            if doomed:  # a live location went away: fence every commit planned before
                generation += 1
                db.execute(
                    "UPDATE users SET gc_generation = ?, used_bytes = used_bytes - ?,"
                    " condemned_bytes = condemned_bytes + ? WHERE id = ?",
                    (generation, charged, charged, user),
                )
        return Condemned(generation, len(doomed), len(live) - len(doomed), charged)

    def repair_index(
        self, user: int, pack_id: PackId, entries: Sequence[BlobLocation], expected_generation: int
    ) -> Repaired:
        """Make the live pack's index rows equal to `entries` (one per blob ID: the first
        wins), as its header lists them, and charge it for its new number of entries.
        Removing a row may take a live location away, so a removal is fenced like a
        condemnation: GcRaced unless the generation is `expected_generation`, and +1
        after. Adding rows only takes nothing away and needs no fence.

        A pack the account does not have, or has condemned, is NotFound; but GcRaced if
        the generation moved since `expected_generation`: then the caller's listing is
        what is out of date (a prune condemned the pack meanwhile). UsageError for an
        entry outside the pack."""
        check_pack_entries(len(entries))
        wanted: dict[bytes, tuple[int, int]] = {}
        for e in entries:
            wanted.setdefault(e.blob_id.raw, (e.offset, e.length))
        with self.transaction() as db:
            (generation,) = db.execute(
                "SELECT gc_generation FROM users WHERE id = ?", (user,)
            ).fetchone()
            raced = GcRaced(
                f"packs were condemned or repaired meanwhile (generation {generation},"
                f" expected {expected_generation}); list the packs again"
            )
            pack = db.execute(
                "SELECT size, charged, state FROM packs WHERE user = ? AND pack_id = ?",
                (user, pack_id.raw),
            ).fetchone()
            if pack is None or pack["state"] != LIVE:
                if generation != expected_generation:
                    raise raced
                if pack is None:
                    raise NotFound(f"no pack {pack_id}")
                raise NotFound(f"pack {pack_id} is condemned; its index is not used any more")
            for e in entries:
                check_inside_pack(pack["size"], e.offset, e.length)
            rows = db.execute(
                "SELECT blob_id, offset, length FROM blob_locations WHERE user = ? AND pack_id = ?",
                (user, pack_id.raw),
            )
            have = {bytes(r[0]): (r[1], r[2]) for r in rows}
            stale = [b for b, where in have.items() if wanted.get(b) != where]
            new = [(b, where) for b, where in wanted.items() if have.get(b) != where]
            if stale:  # a location goes away: fence every commit planned before
                if generation != expected_generation:
                    raise raced
                generation += 1
            db.executemany(
                "DELETE FROM blob_locations WHERE user = ? AND blob_id = ? AND pack_id = ?",
                [(user, b, pack_id.raw) for b in stale],
            )
            db.executemany(
                "INSERT INTO blob_locations (user, blob_id, pack_id, offset, length)"
                " VALUES (?, ?, ?, ?, ?)",
                [(user, b, pack_id.raw, off, length) for b, (off, length) in new],
            )
            # The charge follows the entry count (pack_charge); a repair is not refused
            # for the quota, as an undo is not, but what it adds is counted.
            extra = pack_charge(pack["size"], len(wanted)) - pack["charged"]
            db.execute(
                "UPDATE packs SET charged = charged + ? WHERE user = ? AND pack_id = ?",
                (extra, user, pack_id.raw),
            )
            db.execute(
                "UPDATE users SET gc_generation = ?, used_bytes = used_bytes + ? WHERE id = ?",
                (generation, extra, user),
            )
        return Repaired(added=len(new), removed=len(stale), gc_generation=generation)

    # ------------------------------------------------------------ reaping

    def start_reaping(self, condemned_before: int) -> int:
        """Step 1 of a reap: every condemned pack condemned at or before the time goes
        to state reaping. The number of packs."""
        # Look before taking the write lock: most runs find nothing due, and the lock
        # would make every writer of the moment wait.
        due = "WHERE state = 1 AND condemned_at <= ?"  # the packs_due index
        look = f"SELECT 1 FROM packs {due} LIMIT 1"  # noqa: S608 - constants only
        if self._conn().execute(look, (condemned_before,)).fetchone() is None:
            return 0
        with self.transaction() as db:
            cur = db.execute(f"UPDATE packs SET state = 2 {due}", (condemned_before,))  # noqa: S608
            return cur.rowcount

    def reaping(self) -> list[Reaping]:
        """Packs in state reaping: those step 1 just marked, and those a crash left."""
        rows = self._conn().execute(
            "SELECT p.user, u.user_id, p.pack_id, p.charged FROM packs p"
            " JOIN users u ON u.id = p.user WHERE p.state = 2"
        )
        return [Reaping(r[0], r[1], PackId(r[2]), r[3]) for r in rows]

    def finish_reaping(self, pack: Reaping) -> bool:
        """Step 3: the object is gone; drop the pack's rows and its charge. False when
        another run finished it already."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM blob_locations WHERE user = ? AND pack_id = ?"
                " AND EXISTS (SELECT 1 FROM packs WHERE user = ? AND pack_id = ? AND state = 2)",
                (pack.user, pack.pack_id.raw, pack.user, pack.pack_id.raw),
            )
            cur = db.execute(
                "DELETE FROM packs WHERE user = ? AND pack_id = ? AND state = 2",
                (pack.user, pack.pack_id.raw),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "UPDATE users SET condemned_bytes = condemned_bytes - ? WHERE id = ?",
                (pack.charged, pack.user),
            )
        return True

    def condemned_bytes(self) -> int:
        """Of every account: charged bytes condemned and not yet deleted."""
        (total,) = (
            self._conn().execute("SELECT coalesce(sum(condemned_bytes), 0) FROM users").fetchone()
        )
        return int(total)

    # ------------------------------------------------------------ refs

    def get_ref(self, user: int, name: str) -> Ref | None:
        row = (
            self._conn()
            .execute("SELECT * FROM refs WHERE user = ? AND name = ?", (user, name))
            .fetchone()
        )
        return None if row is None else _ref(row)

    def list_refs(self, user: int, prefix: str = "") -> list[Ref]:
        return self.refs_and_seq(user, prefix)[0]

    def refs_and_seq(self, user: int, prefix: str = "") -> tuple[list[Ref], int]:
        """The refs whose names start with `prefix`, and the account's ref_seq, read
        in one transaction."""
        with self.snapshot() as conn:
            (seq,) = conn.execute("SELECT ref_seq FROM users WHERE id = ?", (user,)).fetchone()
            rows = conn.execute(
                "SELECT * FROM refs WHERE user = ? AND substr(name, 1, ?) = ? ORDER BY name",
                (user, len(prefix), prefix),
            )
            return [_ref(r) for r in rows], int(seq)

    def ref_history(
        self, user: int, name: str, after_seq: int, limit: int
    ) -> tuple[list[RefVersion], int]:
        """Up to `limit` versions of the ref `name` ("" = every ref) with seq above
        `after_seq`, by seq, and the account's ref_seq, read in one transaction."""
        with self.snapshot() as conn:
            (seq,) = conn.execute("SELECT ref_seq FROM users WHERE id = ?", (user,)).fetchone()
            rows = conn.execute(
                "SELECT * FROM ref_history WHERE user = ? AND seq > ? AND (? = '' OR name = ?)"
                " ORDER BY seq LIMIT ?",
                (user, after_seq, name, name, limit),
            )
            return [_ref_version(r) for r in rows], int(seq)

    def update_ref(
        self,
        user: int,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        writer: RefWrite,
        now: int,
    ) -> Ref:
        """Compare-and-swap. Conflict unless the ref is at `expected_version` (0: it
        must not exist). QuotaExceeded when a new ref would be the account's
        MAX_REFS + 1st. The fence (docs/prune-design.md §7): ClientTooOld without a
        generation once the account has one, GcRaced unless it is the current one.
        AppendOnly when an append-only writer points the ref at a commit it had before.
        NotFound unless the commit blob has a live location, because a ref must never
        point at something that is not stored. The change and a ref_history row are
        written together, and ref_seq counts it."""
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
            generation, seq = db.execute(
                "SELECT gc_generation, ref_seq FROM users WHERE id = ?", (user,)
            ).fetchone()
            if writer.gc_generation is None and generation > 0:
                raise ClientTooOld()
            if writer.gc_generation is not None and writer.gc_generation != generation:
                raise GcRaced(
                    f"packs were condemned since this session looked up its blobs "
                    f"(generation {generation}, not {writer.gc_generation}); check again"
                )
            if (
                writer.append_only
                and db.execute(
                    "SELECT 1 FROM ref_history WHERE user = ? AND name = ? AND commit_id = ?",
                    (user, name, commit_id.raw),
                ).fetchone()
            ):
                raise AppendOnly(
                    f"this device is append-only: it may not set ref {name} back to "
                    f"commit {commit_id.short()}, an earlier version"
                )
            if not db.execute(
                _LIVE_LOCATIONS + " AND l.blob_id = ?", (user, commit_id.raw)
            ).fetchone():
                raise NotFound(
                    f"commit {commit_id.short()} is not stored on the server; "
                    "upload its pack before updating the ref"
                )
            ref = Ref(name, commit_id, current + 1, now, writer.device_id)
            db.execute(
                "INSERT INTO refs (user, name, commit_id, version, updated_at, updated_by_device)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user, name) DO UPDATE SET commit_id = excluded.commit_id,"
                " version = excluded.version, updated_at = excluded.updated_at,"
                " updated_by_device = excluded.updated_by_device",
                (user, name, commit_id.raw, ref.version, now, writer.device_id),
            )
            seq += 1
            db.execute("UPDATE users SET ref_seq = ? WHERE id = ?", (seq, user))
            db.execute(
                "INSERT INTO ref_history"
                " (user, name, version, commit_id, seq, device, by_manage, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user,
                    name,
                    ref.version,
                    commit_id.raw,
                    seq,
                    writer.device_id,
                    int(writer.by_manage),
                    now,
                ),
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
    # And all of them together: past this much memory in the whole process, SQLite
    # reuses cached pages instead of taking more. Without it SQLite held 7.2 MiB after
    # a D1 backup (8.6 at most), mostly page caches of 1 MiB per pool thread; FindBlobs
    # takes no longer (bench/server_index_bench.py: its pages come from the OS's cache).
    conn.execute(f"PRAGMA soft_heap_limit = {SQLITE_SOFT_HEAP_LIMIT:d}")
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
        gc_generation=row["gc_generation"],
        ref_seq=row["ref_seq"],
        condemned_bytes=row["condemned_bytes"],
    )


def _device(row: sqlite3.Row) -> Device:
    return Device(
        id=row["id"],
        user=row["user"],
        name=row["name"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        revoked_at=row["revoked_at"],
        rights=row["rights"],
        elevated_until=row["elevated_until"],
    )


def _ref(row: sqlite3.Row) -> Ref:
    return Ref(
        name=row["name"],
        commit_id=BlobId(row["commit_id"]),
        version=row["version"],
        updated_at=row["updated_at"],
        updated_by_device=row["updated_by_device"],
    )


def _insert_device(
    db: sqlite3.Connection, user: int, device: NewDevice, now: int, rights: str
) -> Device:
    # Seen at its creation: a device that just logged in is "now", not "never".
    cur = db.execute(
        "INSERT INTO devices (user, name, public_key, token_hash, created_at, last_seen_at,"
        " rights) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (user, device.name, device.public_key, device.token_hash, now, now, rights),
    )
    return Device(_rowid(cur), user, device.name, now, now, None, rights)


def _location(row: sqlite3.Row) -> BlobLocation:
    return BlobLocation(
        BlobId(row["blob_id"]), PackId(row["pack_id"]), row["offset"], row["length"]
    )


def _ref_version(row: sqlite3.Row) -> RefVersion:
    return RefVersion(
        name=row["name"],
        version=row["version"],
        commit_id=BlobId(row["commit_id"]),
        seq=row["seq"],
        device_id=row["device"],
        by_manage=bool(row["by_manage"]),
        at=row["at"],
    )


def _padded(batch: list[bytes]) -> list[bytes]:
    """`batch` filled up to _SQL_BATCH with copies of its first ID, so that every
    "IN (…)" query has one text. Each count of IDs was a statement of its own, which
    sqlite3 keeps prepared (up to 128 per connection, one connection per pool thread):
    100 FindBlobs calls of different sizes kept 2.5 MiB per thread. A value repeated in
    an IN list changes nothing."""
    return batch + batch[:1] * (_SQL_BATCH - len(batch))


def _packs_by_id(
    db: sqlite3.Connection, user: int, raw_ids: list[bytes]
) -> dict[bytes, sqlite3.Row]:
    found: dict[bytes, sqlite3.Row] = {}
    for i in range(0, len(raw_ids), _SQL_BATCH):
        batch = _padded(raw_ids[i : i + _SQL_BATCH])
        sql = f"SELECT * FROM packs WHERE user = ? AND pack_id IN ({_IN_BATCH})"  # noqa: S608
        rows = db.execute(sql, (user, *batch))
        found.update((bytes(r["pack_id"]), r) for r in rows)
    return found


class PackListing:
    """An account's packs, read in one read transaction on a connection of its own, so
    that a stream can take batches from different pool threads (one at a time) while
    every batch agrees with `gc_generation` and `ref_seq`. Close it when done."""

    def __init__(self, path: Path, user: int, include_entries: bool, include_condemned: bool):
        self._conn = _connect(path)
        self._user = user
        self._include_entries = include_entries
        try:
            self._conn.execute("BEGIN")
            self.gc_generation, self.ref_seq = self._conn.execute(
                "SELECT gc_generation, ref_seq FROM users WHERE id = ?", (user,)
            ).fetchone()
            most = REAPING if include_condemned else LIVE
            self._packs = self._conn.execute(
                "SELECT * FROM packs WHERE user = ? AND state <= ? ORDER BY pack_id", (user, most)
            )
        except BaseException:
            self._conn.close()
            raise

    def batch(self, max_bytes: int) -> list[PackRow]:
        """The next packs, about `max_bytes` of them on the wire (a pack's entries are
        never split); empty at the end."""
        found: list[PackRow] = []
        size = 0
        while size < max_bytes and (row := self._packs.fetchone()) is not None:
            entries = self._entries(row["pack_id"]) if self._include_entries else []
            found.append(
                PackRow(
                    PackId(row["pack_id"]),
                    row["size"],
                    row["charged"],
                    row["created_at"],
                    row["state"],
                    row["condemned_at"],
                    entries,
                )
            )
            size += _PACK_WIRE_BYTES + _ENTRY_WIRE_BYTES * len(entries)
        return found

    def _entries(self, raw_pack_id: bytes) -> list[BlobLocation]:
        rows = self._conn.execute(
            "SELECT * FROM blob_locations WHERE user = ? AND pack_id = ? ORDER BY offset",
            (self._user, raw_pack_id),
        )
        return [_location(r) for r in rows]

    def close(self) -> None:
        self._conn.close()


# What a pack and an index entry take in a ListPacks message, at most (about).
_PACK_WIRE_BYTES = 64
_ENTRY_WIRE_BYTES = 52


def _rowid(cur: sqlite3.Cursor) -> int:
    assert cur.lastrowid is not None
    return cur.lastrowid
