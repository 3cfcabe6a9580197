"""The accounts service without a server: registration modes, invites, log-in and its
limits, password changes, tokens. A real Metadata on a temporary SQLite file."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync import crypto
from anysync.errors import (
    AlreadyExists,
    AuthError,
    PermissionDenied,
    RateLimited,
    UsageError,
    WrongPassword,
)
from anysync.server import auth
from anysync.server.accounts import (
    Accounts,
    DeviceKey,
    LoginForm,
    PasswordChange,
    Session,
    SignupForm,
)
from anysync.server.config import ServerConfig
from anysync.server.limiter import Backoff, LoginLimiter
from anysync.server.metadata import Metadata
from anysync.types import KdfParams

ADDRESS = "192.0.2.7"
SECRET = b"s" * 32


@pytest.fixture(autouse=True)
def _weak_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


class RecordingLimits(LoginLimiter):
    """The server's limits, noting each question asked of them."""

    def __init__(self, db: Metadata, max_failures: int = 3) -> None:
        super().__init__(db, login=Backoff(max_failures, 30, 900))
        self.asked: list[tuple[str, str, str]] = []

    def check(self, email: str, address: str) -> None:
        self.asked.append(("check", email, address))
        super().check(email, address)

    def record_failure(self, email: str, address: str) -> None:
        self.asked.append(("failure", email, address))
        super().record_failure(email, address)

    def record_success(self, email: str, address: str) -> None:
        self.asked.append(("success", email, address))
        super().record_success(email, address)

    def allow(self, kind: str, address: str) -> None:
        self.asked.append(("allow", kind, address))
        super().allow(kind, address)


def make(db: Metadata, registration: str = "open") -> tuple[Accounts, RecordingLimits]:
    limits = RecordingLimits(db)
    return Accounts(ServerConfig(registration=registration), db, SECRET, limits), limits


def form(email: str = "a@example.org", **changes: object) -> tuple[SignupForm, bytes]:
    """A sign-up form and the device's secret key (to open the sealed token)."""
    box_secret, box_public = crypto.new_box_keypair()
    f = SignupForm(
        email=email,
        invite="",
        user_id=os.urandom(16).hex(),
        kdf=KdfParams(os.urandom(16), 10, 8, 1),
        login_secret=os.urandom(32),
        master_keys=b"wrapped",
        device=DeviceKey("laptop", box_public),
    )
    return dataclasses.replace(f, **changes), box_secret  # type: ignore[arg-type]


def bearer(session: Session, box_secret: bytes) -> str:
    return f"Bearer {crypto.open_sealed(box_secret, session.sealed_token).hex()}"


def test_signup_gives_a_token_that_authenticates(db: Metadata) -> None:
    accounts, limits = make(db)
    f, box_secret = form(" A@Example.org ")
    session = accounts.signup(f, ADDRESS)
    caller = accounts.authenticate(bearer(session, box_secret))
    assert (caller.user.email, caller.device.id) == ("a@example.org", session.device.id)
    assert ("allow", "signup", ADDRESS) in limits.asked
    with pytest.raises(AlreadyExists):
        accounts.signup(form("a@example.org")[0], ADDRESS)


def test_registration_modes(db: Metadata) -> None:
    closed, _ = make(db, "closed")
    with pytest.raises(PermissionDenied, match="registration is closed"):
        closed.signup(form()[0], ADDRESS)
    invite, _ = make(db, "invite")
    with pytest.raises(PermissionDenied, match="needs an invite code"):
        invite.signup(form()[0], ADDRESS)
    code = auth.new_invite_code()
    db.add_invite(auth.invite_hash(code), int(time.time()), 2**40)
    invite.signup(form(invite=code.lower())[0], ADDRESS)  # case does not matter
    with pytest.raises(PermissionDenied, match="invalid or used invite code"):
        invite.signup(form("b@example.org", invite=code)[0], ADDRESS)


@pytest.mark.parametrize(
    "bad",
    [
        {"user_id": "XYZ"},
        {"kdf": KdfParams(b"short", 10, 8, 1)},
        {"kdf": KdfParams(os.urandom(16), 9, 8, 1)},
        {"login_secret": b"short"},
        {"master_keys": b""},
        {"master_keys": b"x" * 5000},
        {"device": DeviceKey("x" * 101, b"k" * 32)},
        {"device": DeviceKey("ok", b"short")},
        {"email": "not an address"},
    ],
)
def test_signup_checks_every_field_before_any_effect(db: Metadata, bad: dict[str, object]) -> None:
    accounts, _ = make(db)
    with pytest.raises(UsageError):
        accounts.signup(form(**bad)[0], ADDRESS)
    assert db.list_users() == []


def test_login_limits_and_logs_failures_without_the_secret(
    db: Metadata, caplog: pytest.LogCaptureFixture
) -> None:
    accounts, limits = make(db)
    f, _ = form()
    accounts.signup(f, ADDRESS)
    _, box_public = crypto.new_box_keypair()
    device = DeviceKey("phone", box_public)
    wrong = os.urandom(32)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        with pytest.raises(WrongPassword, match=r"^wrong e-mail or password$"):
            accounts.login(LoginForm("A@example.org", wrong, device), ADDRESS)
    assert [r.getMessage() for r in caplog.records] == [
        f"failed login for a@example.org from {ADDRESS}"
    ] * 3
    assert wrong.hex() not in caplog.text
    with pytest.raises(RateLimited, match="too many failed log-ins from this address"):
        accounts.login(LoginForm("a@example.org", f.login_secret, device), ADDRESS)
    assert ("failure", "a@example.org", ADDRESS) in limits.asked
    # Another e-mail from the same address has its own count (the address's total is
    # limited too, later), and the owner elsewhere is not locked out.
    with pytest.raises(WrongPassword):
        accounts.login(LoginForm("b@example.org", wrong, device), ADDRESS)
    accounts.login(LoginForm("a@example.org", f.login_secret, device), "192.0.2.99")


def test_login_makes_a_new_device(db: Metadata) -> None:
    accounts, limits = make(db)
    f, _ = form()
    first = accounts.signup(f, ADDRESS)
    box_secret, box_public = crypto.new_box_keypair()
    session = accounts.login(
        LoginForm(f.email, f.login_secret, DeviceKey("phone", box_public)), ADDRESS
    )
    assert session.device.id != first.device.id
    assert accounts.authenticate(bearer(session, box_secret)).device.name == "phone"
    assert limits.asked[-1] == ("success", "a@example.org", ADDRESS)


def test_prelogin_answers_unknown_e_mails_alike(db: Metadata) -> None:
    accounts, limits = make(db)
    f, _ = form()
    accounts.signup(f, ADDRESS)
    assert accounts.pre_login("A@example.org", ADDRESS) == f.kdf
    fake = accounts.pre_login("nobody@example.org", ADDRESS)
    assert fake == accounts.pre_login("nobody@example.org", ADDRESS)
    assert len(fake.salt) == 16
    assert ("allow", "prelogin", ADDRESS) in limits.asked


def test_authenticate_refuses_revoked_devices_and_disabled_accounts(db: Metadata) -> None:
    accounts, _ = make(db)
    f, box_secret = form()
    session = accounts.signup(f, ADDRESS)
    token = bearer(session, box_secret)
    for header, message in [
        (None, "needs an access token"),
        ("Bearer xyz", "malformed authorization"),
        ("Bearer " + "ab" * 32, "unknown access token"),
    ]:
        with pytest.raises(AuthError, match=message):
            accounts.authenticate(header)
    db.set_disabled("a@example.org", True)
    with pytest.raises(AuthError, match=r"^account disabled$"):
        accounts.authenticate(token)
    db.set_disabled("a@example.org", False)
    caller = accounts.authenticate(token)
    accounts.revoke_device(caller, caller.device.id)
    with pytest.raises(AuthError, match="revoked"):
        accounts.authenticate(token)


def test_change_password(db: Metadata) -> None:
    accounts, limits = make(db)
    f, box_secret = form()
    caller = accounts.authenticate(bearer(accounts.signup(f, ADDRESS), box_secret))
    new_kdf = KdfParams(os.urandom(16), 10, 8, 1)
    new_secret = os.urandom(32)
    change = PasswordChange(os.urandom(32), new_secret, new_kdf, b"rewrapped")
    with pytest.raises(WrongPassword, match=r"^wrong password$"):
        accounts.change_password(caller, change, ADDRESS)
    assert ("failure", "a@example.org", ADDRESS) in limits.asked
    accounts.change_password(
        caller, dataclasses.replace(change, old_login_secret=f.login_secret), ADDRESS
    )
    assert accounts.pre_login("a@example.org", ADDRESS) == new_kdf
    _, box_public = crypto.new_box_keypair()
    session = accounts.login(LoginForm(f.email, new_secret, DeviceKey("p", box_public)), ADDRESS)
    assert session.user.master_keys == b"rewrapped"


def test_quota_falls_back_to_the_server_default(db: Metadata) -> None:
    config = ServerConfig(registration="open", default_quota=1000)
    accounts = Accounts(config, db, SECRET, RecordingLimits(db))
    f, box_secret = form()
    caller = accounts.authenticate(bearer(accounts.signup(f, ADDRESS), box_secret))
    assert accounts.quota(caller.user) == 1000
    db.set_quota("a@example.org", 0)
    assert accounts.quota(db.user_by_email("a@example.org")) == 0  # type: ignore[arg-type]
