"""The log-in limiter on a real SQLite file (issue #12): delays per e-mail at an address
and per address, never per account; buckets for PreLogin and Signup; kept across a
restart; bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.errors import RateLimited
from anysync.server import limiter as limiter_mod
from anysync.server.limiter import PER_ADDRESS, PER_LOGIN, Backoff, LoginLimiter, address_key
from anysync.server.metadata import Metadata

VICTIM = "victim@example.org"
HOME, ATTACKER = "192.0.2.10", "198.51.100.66"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lim(db: Metadata, clock: Clock) -> LoginLimiter:
    return LoginLimiter(db, clock)


def _fail(lim: LoginLimiter, email: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        lim.check(email, address)
        lim.record_failure(email, address)


def _rows(db: Metadata, table: str) -> int:
    return int(db.connection().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_the_delays() -> None:
    assert [PER_LOGIN.delay(n) for n in range(12)] == [0] * 5 + [30, 60, 120, 240, 480, 900, 900]
    assert PER_ADDRESS.delay(19) == 0 and PER_ADDRESS.delay(20) == 30
    assert PER_LOGIN.delay(10**9) == 900  # no overflow


def test_guessing_from_elsewhere_does_not_lock_the_victim_out(
    lim: LoginLimiter, clock: Clock
) -> None:
    _fail(lim, VICTIM, ATTACKER, 5)
    with pytest.raises(
        RateLimited, match=r"^too many failed log-ins from this address; try again in 30 s$"
    ):
        lim.check(VICTIM, ATTACKER)
    for _ in range(100):  # the attacker keeps waiting out the delays
        clock.now += 900
        _fail(lim, VICTIM, ATTACKER)
    lim.check(VICTIM, HOME)  # the victim's own address: at once
    lim.record_success(VICTIM, HOME)
    with pytest.raises(RateLimited, match=r"try again in 900 s$"):
        lim.check(VICTIM, ATTACKER)


def test_delays_grow_and_run_out(lim: LoginLimiter, clock: Clock) -> None:
    _fail(lim, VICTIM, ATTACKER, 5)
    clock.now += 29.5
    with pytest.raises(RateLimited, match=r"try again in 1 s$"):
        lim.check(VICTIM, ATTACKER)
    clock.now += 0.5
    _fail(lim, VICTIM, ATTACKER)  # the 6th: 60 s
    clock.now += 59
    with pytest.raises(RateLimited, match=r"try again in 1 s$"):
        lim.check(VICTIM, ATTACKER)
    clock.now += 1
    lim.check(VICTIM, ATTACKER)


def test_refused_attempts_do_not_count(lim: LoginLimiter, clock: Clock) -> None:
    _fail(lim, VICTIM, ATTACKER, 5)
    for _ in range(50):
        with pytest.raises(RateLimited):
            _fail(lim, VICTIM, ATTACKER)
    clock.now += 30
    lim.check(VICTIM, ATTACKER)


def test_an_address_guessing_many_accounts_is_slowed(lim: LoginLimiter) -> None:
    for i in range(20):  # one guess at each of 20 accounts
        _fail(lim, f"user{i}@example.org", ATTACKER)
    with pytest.raises(RateLimited, match=r"try again in 30 s$"):
        lim.check("user99@example.org", ATTACKER)
    lim.check("user99@example.org", HOME)


def test_success_clears_its_e_mail_not_the_address(lim: LoginLimiter) -> None:
    _fail(lim, VICTIM, HOME, 4)
    lim.record_success(VICTIM, HOME)
    _fail(lim, VICTIM, HOME, 4)  # four fresh free failures: the count was cleared
    for i in range(12):
        _fail(lim, f"user{i}@example.org", HOME)
    # 20 failures from HOME: an own account's success must not reset guesses at others.
    lim.record_success("mine@example.org", HOME)
    with pytest.raises(RateLimited):
        lim.check("mine@example.org", HOME)


def test_counts_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    db = Metadata.open(tmp_path / "metadata.db")
    _fail(LoginLimiter(db, clock), VICTIM, ATTACKER, 5)
    db.close()
    db = Metadata.open(tmp_path / "metadata.db")
    try:
        with pytest.raises(RateLimited, match=r"try again in 30 s$"):
            LoginLimiter(db, clock).check(VICTIM, ATTACKER)
    finally:
        db.close()


def test_counts_are_forgotten_a_day_after_the_last_failure(lim: LoginLimiter, clock: Clock) -> None:
    _fail(lim, VICTIM, ATTACKER, 5)
    clock.now += 24 * 3600 + 1
    _fail(lim, VICTIM, ATTACKER, 4)  # a fresh start: 4 free failures again
    lim.check(VICTIM, ATTACKER)


def test_a_clock_set_back_does_not_lengthen_a_delay(lim: LoginLimiter, clock: Clock) -> None:
    _fail(lim, VICTIM, ATTACKER, 5)
    clock.now -= 7 * 24 * 3600
    with pytest.raises(RateLimited, match=r"try again in 30 s$"):
        lim.check(VICTIM, ATTACKER)


def test_concurrent_failures_are_all_counted(db: Metadata, clock: Clock) -> None:
    free40 = Backoff(free=40, first=30, cap=900)
    lim = LoginLimiter(db, clock, login=free40, address=free40)
    barrier = threading.Barrier(8)

    def guess() -> None:
        barrier.wait()
        for _ in range(5):
            lim.record_failure(VICTIM, ATTACKER)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(RateLimited, match=r"try again in 30 s$"):  # exactly 40 failures
        lim.check(VICTIM, ATTACKER)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("[2001:db8:1:2:aaaa::1]", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("[::ffff:192.0.2.1]", "192.0.2.1"),
        ("[fe80::1%eth0]", "fe80::/64"),
        ("unix:/run/anysync.sock", "unix:/run/anysync.sock"),
    ],
)
def test_address_keys(address: str, key: str) -> None:
    assert address_key(address) == key


def test_an_ipv6_subscriber_counts_as_one_address(lim: LoginLimiter) -> None:
    for i in range(5):
        _fail(lim, VICTIM, f"[2001:db8::{i + 1}]")
    with pytest.raises(RateLimited):
        lim.check(VICTIM, "[2001:db8::ffff]")
    lim.check(VICTIM, "[2001:db8:0:1::1]")  # the next /64


# ---------------------------------------------------------------- PreLogin and Signup


def test_prelogin_bucket(lim: LoginLimiter, clock: Clock) -> None:
    for _ in range(30):
        lim.allow("prelogin", ATTACKER)
    with pytest.raises(
        RateLimited, match=r"^too many log-in requests from this address; try again in 2 s$"
    ):
        lim.allow("prelogin", ATTACKER)
    lim.allow("prelogin", HOME)
    lim.allow("signup", ATTACKER)  # a bucket of its own
    clock.now += 2
    lim.allow("prelogin", ATTACKER)
    with pytest.raises(RateLimited):
        lim.allow("prelogin", ATTACKER)
    clock.now += 3600
    for _ in range(30):  # refilled, up to the burst
        lim.allow("prelogin", ATTACKER)
    with pytest.raises(RateLimited):
        lim.allow("prelogin", ATTACKER)


def test_signup_bucket_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    db = Metadata.open(tmp_path / "metadata.db")
    lim = LoginLimiter(db, clock)
    for _ in range(20):
        lim.allow("signup", ATTACKER)
    db.close()
    db = Metadata.open(tmp_path / "metadata.db")
    try:
        with pytest.raises(RateLimited, match=r"^too many sign-ups .* try again in 120 s$"):
            LoginLimiter(db, clock).allow("signup", ATTACKER)
    finally:
        db.close()


def test_an_unknown_kind_is_a_bug(lim: LoginLimiter) -> None:
    with pytest.raises(ValueError, match="no rate limit for 'login'"):
        lim.allow("login", HOME)


def test_a_full_disk_lets_prelogin_through(lim: LoginLimiter, db: Metadata) -> None:
    conn = db.connection()  # the limiter runs on this thread: the same connection
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    for i in range(200):  # new rows that no longer fit
        lim.allow("prelogin", f"203.0.113.{i}")
    assert _rows(db, "call_buckets") < 200


# ---------------------------------------------------------------- bounds


def test_tables_are_capped_and_a_long_attack_is_evicted_last(
    db: Metadata, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limiter_mod, "_PRUNE_EVERY", 10)
    lim = LoginLimiter(db, clock, max_rows=50)
    _fail(lim, VICTIM, ATTACKER, 5)
    for i in range(300):  # spraying addresses and e-mails
        clock.now += 0.01
        lim.record_failure(f"spray{i}@example.org", f"10.0.{i // 250}.{i % 250}")
        lim.allow("prelogin", f"10.1.{i // 250}.{i % 250}")
    assert _rows(db, "login_failures") <= 50 + 10
    assert _rows(db, "call_buckets") <= 50 + 10
    with pytest.raises(RateLimited):  # the attack's count was kept: the most failures
        lim.check(VICTIM, ATTACKER)


def test_expired_rows_are_pruned(db: Metadata, clock: Clock) -> None:
    lim = LoginLimiter(db, clock)
    _fail(lim, VICTIM, ATTACKER, 3)
    lim.allow("signup", ATTACKER)
    clock.now += 24 * 3600 + 1
    lim.prune()
    assert (_rows(db, "login_failures"), _rows(db, "call_buckets")) == (0, 0)
