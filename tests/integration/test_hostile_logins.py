"""Issue #12, case 2: failed logins must not become a weapon against their target.

Today five wrong logins for an e-mail, from anywhere, lock its owner out for 300 s, and
a restart forgives every attacker. Required: failures are throttled per (e-mail,
address) and per address, so the owner, from an address that has not failed, logs in at
once; the throttle survives a restart; PreLogin and Signup are rate-limited as well; and
every failed login is logged with the client's address, never the secret.

Attackers connect from their own loopback addresses (hostile.Origin); the owner from
127.0.0.1. A throttled call is RESOURCE_EXHAUSTED with the reason "rate_limited"
(anysync.errors.RateLimited), which the client shows as "too many ... try again".
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from anysync.errors import RateLimited, WrongPassword
from anysync.v1 import anysync_pb2 as pb
from tests.integration.harness import Server
from tests.integration.hostile import (
    CALL_DEADLINE,
    Account,
    Wire,
    describe,
    log_since,
    log_size,
    login_request,
    origin,
    reason,
    signup,
    start_server,
)

# Wrong logins an attacker may try back to back before it must have been throttled.
# Generous: today the limit is 5; a growing delay may start later, but not this late.
MAX_ATTEMPTS = 50
# Bursts of calls from one address that no legitimate client makes.
PRELOGIN_BURST = 300
SIGNUP_BURST = 50


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "server-home")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def owner(server: Server) -> Iterator[tuple[Wire, Account]]:
    """The account under attack, and its owner's connection from 127.0.0.1."""
    with origin(server) as home:
        wire = home.wire()
        yield wire, signup(wire, "owner@example.org", server.invite())


def wrong_login(wire: Wire, email: str, secret: bytes | None = None) -> grpc.RpcError:
    """One login with a wrong secret; its error (the call must fail)."""
    try:
        wire.accounts.Login(login_request(email, secret or os.urandom(32)), timeout=CALL_DEADLINE)
    except grpc.RpcError as err:
        return err
    raise AssertionError(f"a random login secret for {email} was accepted")


def is_throttled(err: grpc.RpcError) -> bool:
    return err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and reason(err) == RateLimited.reason


def is_wrong_password(err: grpc.RpcError) -> bool:
    return err.code() == grpc.StatusCode.UNAUTHENTICATED and reason(err) == WrongPassword.reason


def failures_until_throttled(wire: Wire, emails: Iterator[str]) -> int:
    """Wrong logins, one e-mail from `emails` each, until one is throttled: how many
    were answered "wrong password" first."""
    for failures in range(MAX_ATTEMPTS):
        err = wrong_login(wire, next(emails))
        if is_throttled(err):
            return failures
        assert is_wrong_password(err), describe(err)
    raise AssertionError(f"{MAX_ATTEMPTS} wrong logins in a row from one address, none throttled")


def repeat(email: str) -> Iterator[str]:
    while True:
        yield email


def test_failed_logins_elsewhere_do_not_lock_the_owner_out(
    server: Server, owner: tuple[Wire, Account]
) -> None:
    owner_wire, account = owner
    # One attacker guesses the owner's password; another sprays many e-mails. Each is
    # throttled (per e-mail and address; per address).
    with origin(server, "127.0.0.3") as attacker:
        failures_until_throttled(attacker.wire(), repeat(account.email))
    with origin(server, "127.0.0.4") as sprayer:
        sprayed = (f"user{i}@example.org" for i in range(MAX_ATTEMPTS + 1))
        failures_until_throttled(sprayer.wire(), sprayed)
    # The owner, from an address that has not failed, logs in at once.
    try:
        owner_wire.accounts.Login(
            login_request(account.email, account.login_secret), timeout=CALL_DEADLINE
        )
    except grpc.RpcError as err:
        raise AssertionError(
            f"the owner is locked out by others' failures: {describe(err)}"
        ) from None
    # ... and the attacker is still throttled for that e-mail.
    with origin(server, "127.0.0.3") as attacker:
        again = wrong_login(attacker.wire(), account.email)
        assert is_throttled(again), describe(again)


def test_login_throttle_survives_a_restart(server: Server, owner: tuple[Wire, Account]) -> None:
    _, account = owner
    with origin(server, "127.0.0.5") as attacker:
        before = failures_until_throttled(attacker.wire(), repeat(account.email))
    # A server that forgot would grant the attacker the same number of guesses again.
    assert before >= 2, f"throttled after {before} failures: a typo would lock users out"
    server.stop()
    server.start()
    with origin(server, "127.0.0.5") as attacker:
        after = failures_until_throttled(attacker.wire(), repeat(account.email))
    # Remembered: refused at once, or one more guess once the current delay has run out.
    assert after <= 1, f"after a restart the attacker got {after} more guesses (before: {before})"


def test_prelogin_burst_is_rate_limited(server: Server, owner: tuple[Wire, Account]) -> None:
    owner_wire, _ = owner
    errors = []
    with origin(server, "127.0.0.6") as attacker:
        wire = attacker.wire()
        for i in range(PRELOGIN_BURST):
            try:
                wire.accounts.PreLogin(
                    pb.PreLoginRequest(email=f"probe{i}@example.org"), timeout=CALL_DEADLINE
                )
            except grpc.RpcError as err:
                errors.append(err)
    assert errors, f"{PRELOGIN_BURST} PreLogin calls from one address, none rate-limited"
    assert all(is_throttled(e) for e in errors), [describe(e) for e in errors[:3]]
    # Per address: others are still answered.
    owner_wire.accounts.PreLogin(pb.PreLoginRequest(email="x@example.org"), timeout=CALL_DEADLINE)


def test_signup_burst_is_rate_limited(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server-home", registration='"open"')
    try:
        refused = None
        with origin(server, "127.0.0.7") as attacker:
            wire = attacker.wire()
            for i in range(SIGNUP_BURST):
                try:
                    signup(wire, f"spam{i}@example.org")
                except grpc.RpcError as err:
                    refused = err
                    break
        assert refused is not None, f"{SIGNUP_BURST} sign-ups from one address, none rate-limited"
        assert is_throttled(refused), describe(refused)
        # Per address: someone else can still sign up.
        with origin(server) as home:
            signup(home.wire(), "real@example.org")
    finally:
        server.stop()


def test_failed_logins_are_logged_with_the_address_and_never_the_secret(
    server: Server, owner: tuple[Wire, Account]
) -> None:
    _, account = owner
    offset = log_size(server)
    secrets_sent = [os.urandom(32) for _ in range(3)]
    with origin(server, "127.0.0.8") as attacker:
        wire = attacker.wire()
        for secret in secrets_sent:
            assert is_wrong_password(wrong_login(wire, account.email, secret))
        assert is_wrong_password(wrong_login(wire, "nobody@example.org", secrets_sent[0]))
    log = log_since(server, offset)
    naming = [line for line in log.splitlines() if "127.0.0.8" in line]
    assert len(naming) >= len(secrets_sent) + 1, (
        f"failed logins not logged with the address:\n{log}"
    )
    for secret in [*secrets_sent, account.login_secret]:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            assert form not in log, "a login secret is in the server log"
