"""The scrub: compares the object store with the packs table and reports what does not
match (docs/prune-design.md §8). It reports and never deletes.

- A recorded pack, live or condemned, whose object is missing: data is lost. Metric
  anysync_scrub_missing_packs.
- An object no pack row refers to (an orphan): remembered in scrub_orphans from the
  first scrub that lists it, and reported once that is `orphan_age` ago (the store gives
  no modification times, and a direct upload in flight is such an object for a while).
  Metrics anysync_scrub_orphan_packs and anysync_scrub_orphan_bytes.
- Packs a crashed reaper left half-deleted (state reaping) are finished first, by the
  reaper; objects of packs in that state are neither missing nor orphans.

Uploads and the reaper go on meanwhile, in this process or the server's, so the order
matters: the rows are read before the store is listed, because an object is stored
before its row is written (a pack recorded after the read is at worst a young orphan),
and each pack that then seems missing or orphaned is looked at again (the reaper may
have deleted it, an upload may have recorded it).

Memory: the rows of every pack while the store is listed, about 150 bytes each (a
million packs, some 16 TiB of data, take about 150 MB). Blocks: call it from a worker
thread or the command line.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from anysync.errors import NotFound, UsageError
from anysync.server import packs
from anysync.server.gc import Reaper
from anysync.server.metadata import LIVE, REAPING, Metadata
from anysync.store import ObjectStore
from anysync.types import PACK_ID_SIZE, PackId

log = logging.getLogger(__name__)

# How often the scheduled scrub looks whether a run is due (the last run's time is in
# the database, so a restart neither skips nor repeats one).
_DUE_CHECK_SECONDS = 600

_UserPack = tuple[int, bytes]  # (users.id, raw pack ID)


@dataclass(frozen=True, slots=True)
class MissingPack:
    user_id: str
    pack_id: PackId
    state: int  # LIVE or CONDEMNED


@dataclass(frozen=True, slots=True)
class Orphan:
    key: str
    size: int
    first_seen: int  # unix s
    user_id: str | None  # the account whose directory holds it, if any


@dataclass(frozen=True, slots=True)
class ScrubReport:
    at: int  # unix s
    objects: int  # listed in the store
    packs: int  # recorded live or condemned
    reaped: int  # half-deleted packs the reaper finished first
    missing: list[MissingPack]
    orphans: list[Orphan]  # known for at least orphan_age
    young_orphans: int  # known for less: not reported yet

    @property
    def clean(self) -> bool:
        return not self.missing and not self.orphans

    @property
    def orphan_bytes(self) -> int:
        return sum(o.size for o in self.orphans)


class Stopped(Exception):
    """The scrub was asked to stop (the server is shutting down); nothing was written."""


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    user_id: str


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An object without a row at the time of the read."""

    key: str
    account: _Account | None
    pack_id: PackId | None


class Scrubber:
    def __init__(
        self,
        db: Metadata,
        store: ObjectStore,
        server_secret: bytes,
        reaper: Reaper,
        orphan_age_seconds: int,
    ) -> None:
        self.db = db
        self.store = store
        self.secret = server_secret
        self.reaper = reaper
        self.orphan_age = orphan_age_seconds
        # One run at a time in this process: a second at once would only repeat the work.
        self._running = threading.Lock()

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> ScrubReport:
        """One scrub; its findings are remembered for the metrics. Stopped when
        `should_stop` says so during the listing."""
        with self._running:
            reaped = self.reaper.run()
            accounts, recorded = self._recorded()
            packs_recorded = sum(1 for state in recorded.values() if state != REAPING)
            candidates: list[_Candidate] = []
            objects = 0
            for key in self.store.list(""):
                if should_stop():
                    raise Stopped
                objects += 1
                account, pid = self._owner(key, accounts)
                row = None if account is None or pid is None else (account.id, pid.raw)
                if row is not None and recorded.pop(row, None) is not None:
                    continue  # the pack its row says
                candidates.append(_Candidate(key, account, pid))
            by_id = {a.id: a for a in accounts.values()}
            missing = self._confirm_missing(
                [(by_id[user], raw, state) for (user, raw), state in recorded.items()]
            )
            now = int(time.time())
            orphans, young = self._remember_orphans(candidates, now)
            report = ScrubReport(now, objects, packs_recorded, reaped, missing, orphans, young)
            self._remember_findings(report)
            return report

    # ------------------------------------------------------------ reading

    def _recorded(self) -> tuple[dict[str, _Account], dict[_UserPack, int]]:
        """The accounts by their store directory, and every pack row's state, read in
        one transaction."""
        with self.db.snapshot() as conn:
            accounts = {
                packs.user_prefix(self.secret, user_id): _Account(id_, user_id)
                for id_, user_id in conn.execute("SELECT id, user_id FROM users")
            }
            recorded = {
                (user, bytes(raw)): state
                for user, raw, state in conn.execute("SELECT user, pack_id, state FROM packs")
            }
        return accounts, recorded

    @staticmethod
    def _owner(key: str, accounts: dict[str, _Account]) -> tuple[_Account | None, PackId | None]:
        """The account and pack a key names (packs.pack_key), as far as it names any."""
        prefix, _, rest = key.partition("/")
        account = accounts.get(prefix)
        shard, _, hex_id = rest.partition("/")
        try:
            raw = bytes.fromhex(hex_id)
        except ValueError:
            return account, None
        if len(raw) != PACK_ID_SIZE or shard != hex_id[:2] or hex_id != raw.hex():
            return account, None
        return account, PackId(raw)

    def _key(self, account: _Account, pack_id: PackId) -> str:
        return packs.pack_key(self.secret, account.user_id, pack_id)

    # ------------------------------------------------------------ deciding

    def _confirm_missing(self, unseen: list[tuple[_Account, bytes, int]]) -> list[MissingPack]:
        """Of the rows whose object was not listed, those still recorded (and not being
        reaped) whose object is still absent: the reaper may have deleted one meanwhile."""
        missing = []
        conn = self.db.connection()
        for account, raw, _ in unseen:
            row = conn.execute(
                "SELECT state FROM packs WHERE user = ? AND pack_id = ?", (account.id, raw)
            ).fetchone()
            if row is None or row[0] == REAPING:
                continue
            pid = PackId(raw)
            try:
                self.store.size(self._key(account, pid))
            except NotFound:
                missing.append(MissingPack(account.user_id, pid, int(row[0])))
        return missing

    def _remember_orphans(self, candidates: list[_Candidate], now: int) -> tuple[list[Orphan], int]:
        """Bring scrub_orphans up to date with this listing; the orphans known for at
        least orphan_age, and how many are younger."""
        conn = self.db.connection()
        known = {k: (size, seen) for k, size, seen in conn.execute("SELECT * FROM scrub_orphans")}
        sizes: dict[str, int] = {}
        for c in candidates:  # store calls before the write transaction, not in it
            if c.key in known:
                continue
            try:
                sizes[c.key] = self.store.size(c.key)
            except NotFound:  # gone since the listing (a failed direct upload)
                pass
            except UsageError:  # a name the store never writes (a file put there by hand)
                sizes[c.key] = 0  # reported all the same; its size is not asked for
        with self.db.transaction() as db:
            current: dict[str, Orphan] = {}
            for c in candidates:
                if (
                    c.account is not None
                    and c.pack_id is not None
                    and _has_row(db, c.account, c.pack_id)
                ):
                    continue  # recorded after the read: an upload that finished
                size, seen = known.get(c.key) or (sizes.get(c.key), now)
                if size is not None:
                    user_id = c.account.user_id if c.account else None
                    current[c.key] = Orphan(c.key, size, seen, user_id)
            db.executemany(
                "DELETE FROM scrub_orphans WHERE key = ?",
                [(k,) for k in known if k not in current],
            )
            db.executemany(
                "INSERT OR IGNORE INTO scrub_orphans (key, size, first_seen) VALUES (?, ?, ?)",
                [(o.key, o.size, o.first_seen) for o in current.values() if o.key not in known],
            )
        old = [o for o in current.values() if o.first_seen <= now - self.orphan_age]
        old.sort(key=lambda o: o.key)
        return old, len(current) - len(old)

    def _remember_findings(self, report: ScrubReport) -> None:
        with self.db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO scrub_last"
                " (id, at, missing_packs, orphan_packs, orphan_bytes) VALUES (1, ?, ?, ?, ?)",
                (report.at, len(report.missing), len(report.orphans), report.orphan_bytes),
            )


def _has_row(conn: sqlite3.Connection, account: _Account, pack_id: PackId) -> bool:
    row = conn.execute(
        "SELECT 1 FROM packs WHERE user = ? AND pack_id = ?", (account.id, pack_id.raw)
    ).fetchone()
    return row is not None


def last_run(db: Metadata) -> int | None:
    """When the last scrub finished (unix s); None if none has."""
    row = db.connection().execute("SELECT at FROM scrub_last WHERE id = 1").fetchone()
    return None if row is None else int(row[0])


def log_report(report: ScrubReport) -> None:
    """The findings as log lines: an ERROR per missing pack, a WARNING per orphan."""
    for m in report.missing:
        log.error(
            "scrub: pack %s of account %s is recorded (%s) but missing from the store",
            m.pack_id.hex()[:8],
            m.user_id,
            state_name(m.state),
        )
    for o in report.orphans:
        log.warning(
            "scrub: object %s (%d bytes%s) has no pack since %s; left in place",
            o.key,
            o.size,
            f", account {o.user_id}" if o.user_id else "",
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(o.first_seen)),
        )
    log.info(
        "scrub: %d objects, %d packs, %d missing, %d orphans (%d bytes), %d orphans younger"
        " than orphan_age, %d half-deleted packs finished",
        report.objects,
        report.packs,
        len(report.missing),
        len(report.orphans),
        report.orphan_bytes,
        report.young_orphans,
        report.reaped,
    )


def state_name(state: int) -> str:
    return "live" if state == LIVE else "condemned"


class ScrubThread:
    """Runs a scrub whenever the last one finished `every` seconds ago or more (at
    start-up too, if due), until closed. A run under way stops at close."""

    def __init__(self, scrubber: Scrubber, every: int) -> None:
        self._scrubber = scrubber
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scrub", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = min(self._every, _DUE_CHECK_SECONDS)
            try:
                last = last_run(self._scrubber.db)
                if last is None or time.time() - last >= self._every:
                    log_report(self._scrubber.run(self._stop.is_set))
            except Stopped:
                return
            except Exception:
                log.exception("scrub failed; will retry")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
