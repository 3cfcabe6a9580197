"""Limits on the calls anyone may make: failed log-ins, PreLogin, Signup (issue #12).

Failed log-ins slow down the place they come from, never the account. Two counts are
kept per client address: the failures for one e-mail from it (`login`: 5 free, then
30 s doubling up to 15 min) and all its failures together (`address`: 20 free, then
the same delays). A log-in is refused while either count's delay runs. A log-in from
an address that has not failed is never delayed, so guessing a victim's password from
elsewhere cannot lock the victim out. A successful log-in clears the failures of its
e-mail at its address, not the address's total: one's own account must not reset the
count of guesses at other accounts. A count is forgotten a day after its last failure.
There is deliberately no count per e-mail across addresses: that is the lock-out weapon.

PreLogin and Signup take a token from a bucket per address (`allow`): PreLogin 30 at
once, then one per 2 s; Signup 20 at once, then one per 2 min.

IPv6 addresses count per /64, what one subscriber usually gets. The state is in the
metadata database (sql/0003_login_limits.sql), so a restart forgives nobody. Rows
expire, and each table is capped at MAX_ROWS: every _PRUNE_EVERY new rows, expired
rows go and then the least telling ones (fewest failures, oldest), so that spraying
addresses or e-mails cannot grow the database without bound, nor easily evict the
count of a long attack. Called from the RPC thread pool: Metadata has a connection
per thread, and every read-modify-write runs in one transaction.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from anysync.errors import RateLimited
from anysync.server.metadata import Metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """`free` attempts may fail without a wait; after failure number `free` the next
    attempt waits `first` seconds, and each further failure doubles that, up to `cap`."""

    free: int
    first: float
    cap: float

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.cap, self.first * 2.0 ** min(failures - self.free, 64))


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: `burst` calls at once, then one call per `every` seconds."""

    burst: int
    every: float


PER_LOGIN = Backoff(free=5, first=30, cap=900)  # one e-mail from one address
PER_ADDRESS = Backoff(free=20, first=30, cap=900)  # every e-mail from one address
BUCKETS: Mapping[str, Bucket] = {
    "prelogin": Bucket(burst=30, every=2),
    "signup": Bucket(burst=20, every=120),
}
_WHAT = {"prelogin": "log-in requests", "signup": "sign-ups"}
FORGET_AFTER = 24 * 3600  # seconds after its last failure a count is forgotten
MAX_ROWS = 100_000  # per table
_PRUNE_EVERY = 1_000  # new rows between prunes
_ALL = ""  # the e-mail of an address's total


class LoginLimiter:
    def __init__(
        self,
        metadata: Metadata,
        clock: Callable[[], float] = time.time,
        *,
        login: Backoff = PER_LOGIN,
        address: Backoff = PER_ADDRESS,
        buckets: Mapping[str, Bucket] = BUCKETS,
        forget_after: float = FORGET_AFTER,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self._db = metadata
        self._clock = clock  # wall-clock time: it is stored and outlives the process
        self._login = login
        self._address = address
        self._buckets = buckets
        self._forget_after = forget_after
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._new_rows = _PRUNE_EVERY  # so that the first new row after a start prunes

    # ------------------------------------------------------------ failed log-ins

    def check(self, email: str, address: str) -> None:
        """RateLimited while a delay runs for `email` at `address` or for `address`."""
        now = self._clock()
        rows = self._db.connection().execute(
            "SELECT email, failures, last_failure FROM login_failures"
            " WHERE address = ? AND email IN (?, ?)",
            (address_key(address), email, _ALL),
        )
        wait = 0.0
        for row_email, failures, last in rows:
            if last < now - self._forget_after:
                continue
            delay = (self._address if row_email == _ALL else self._login).delay(failures)
            # min(): a clock set back must not turn a delay into a longer one.
            wait = max(wait, min(last + delay - now, delay))
        if wait > 0:
            raise RateLimited(
                f"too many failed log-ins from this address; try again in {math.ceil(wait)} s"
            )

    def record_failure(self, email: str, address: str) -> None:
        now = self._clock()
        key = address_key(address)
        new = 0
        with self._db.transaction() as db:
            for row_email in (email, _ALL):
                row = db.execute(
                    "SELECT failures, last_failure FROM login_failures"
                    " WHERE address = ? AND email = ?",
                    (key, row_email),
                ).fetchone()
                fresh = row is None or row[1] < now - self._forget_after
                db.execute(
                    "INSERT INTO login_failures (address, email, failures, last_failure)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (address, email) DO UPDATE"
                    " SET failures = excluded.failures, last_failure = excluded.last_failure",
                    (key, row_email, 1 if fresh else row[0] + 1, now),
                )
                new += row is None
        self._count_new_rows(new, now)

    def record_success(self, email: str, address: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "DELETE FROM login_failures WHERE address = ? AND email = ?",
                (address_key(address), email),
            )

    # ------------------------------------------------------------ calls

    def allow(self, kind: str, address: str) -> None:
        """Take one call of `kind` ("prelogin", "signup") from `address`'s bucket;
        RateLimited when it is empty. On a full disk the call is let through: these
        are reads, and a server that cannot write should still answer them."""
        bucket = self._buckets.get(kind)
        if bucket is None:
            raise ValueError(f"no rate limit for {kind!r}")
        now = self._clock()
        key = address_key(address)
        try:
            with self._db.transaction() as db:
                row = db.execute(
                    "SELECT tokens, updated FROM call_buckets WHERE kind = ? AND address = ?",
                    (kind, key),
                ).fetchone()
                tokens = float(bucket.burst)
                if row is not None:
                    refill = max(0.0, now - row[1]) / bucket.every
                    tokens = min(tokens, row[0] + refill)
                if tokens < 1:
                    wait = math.ceil((1 - tokens) * bucket.every)
                    raise RateLimited(
                        f"too many {_WHAT.get(kind, kind)} from this address; try again in {wait} s"
                    )
                db.execute(
                    "INSERT INTO call_buckets (kind, address, tokens, updated) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (kind, address) DO UPDATE"
                    " SET tokens = excluded.tokens, updated = excluded.updated",
                    (kind, key, tokens - 1, now),
                )
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            log.warning("%s from %s: not counted: %s", kind, key, err.strerror)
            return
        self._count_new_rows(int(row is None), now)

    # ------------------------------------------------------------ bounds

    def _count_new_rows(self, new: int, now: float) -> None:
        with self._lock:
            self._new_rows += new
            if self._new_rows < _PRUNE_EVERY:
                return
            self._new_rows = 0
        self.prune(now)

    def prune(self, now: float | None = None) -> None:
        """Drop expired rows, then the least telling ones of a table over MAX_ROWS."""
        now = self._clock() if now is None else now
        with self._db.transaction() as db:
            db.execute(
                "DELETE FROM login_failures WHERE last_failure < ?", (now - self._forget_after,)
            )
            for kind, bucket in self._buckets.items():  # full again: the same as no row
                db.execute(
                    "DELETE FROM call_buckets WHERE kind = ? AND updated + (? - tokens) * ? <= ?",
                    (kind, bucket.burst, bucket.every, now),
                )
            for table, keys, order in (
                ("login_failures", "address, email", "failures, last_failure"),
                ("call_buckets", "kind, address", "updated"),
            ):
                (count,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                if count > self._max_rows:
                    db.execute(
                        f"DELETE FROM {table} WHERE ({keys}) IN"  # noqa: S608 (constants)
                        f" (SELECT {keys} FROM {table} ORDER BY {order} LIMIT ?)",
                        (count - self._max_rows,),
                    )


def address_key(address: str) -> str:
    """The key of a client address: an IPv6 address's /64 network, an IPv4 address
    (also one mapped into IPv6) as it is; anything else (a Unix socket) unchanged."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
    except ValueError:
        return address[:200]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
