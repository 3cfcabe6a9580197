"""Server-side auth helpers: the stored login hash (its format must not drift, or
existing accounts stop verifying), fake KDF answers, e-mail and token parsing, invite
codes, and the failed-login limiter."""

from __future__ import annotations

import hashlib

import pytest

from anysync import crypto
from anysync.errors import AuthError, UsageError
from anysync.server import auth

SECRET = b"\x01" * 32
SALT = b"\x02" * 16
# hashlib.scrypt(SECRET, salt=SALT, n=2**14, r=8, p=1, dklen=32): what the database holds
# for such an account; a change of the hash's format would lock every account out.
GOLDEN_HASH = "26b902cb7cc467a9825add8f83b8d2bae590457504adafb17271413fd8156652"


def test_the_login_hash_format_is_stable() -> None:
    digest, salt, params = auth.hash_login_secret(SECRET, SALT)
    assert (digest.hex(), salt, params) == (GOLDEN_HASH, SALT, "scrypt$14$8$1")
    assert auth.verify_login_secret(SECRET, bytes.fromhex(GOLDEN_HASH), SALT, "scrypt$14$8$1")


def test_a_fresh_salt_each_time() -> None:
    d1, s1, _ = auth.hash_login_secret(SECRET)
    d2, s2, _ = auth.hash_login_secret(SECRET)
    assert len(s1) == len(s2) == 16 and s1 != s2
    assert d1 != d2 and len(d1) == 32


def test_verify_uses_the_stored_parameters() -> None:
    params = "scrypt$10$8$2"
    digest, salt, _ = auth.hash_login_secret(SECRET, params=params)
    assert auth.verify_login_secret(SECRET, digest, salt, params)
    assert not auth.verify_login_secret(b"\x03" * 32, digest, salt, params)
    assert not auth.verify_login_secret(SECRET, digest, salt, "scrypt$10$8$1")


def test_an_unknown_hash_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown login hash 'argon2\$1\$2\$3'"):
        auth.hash_login_secret(SECRET, SALT, "argon2$1$2$3")


def test_burning_a_hash_does_the_work_of_one_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, object]] = []
    real = hashlib.scrypt

    def scrypt(password: bytes, **kw: object) -> bytes:
        calls.append(kw)
        return real(password, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(auth.hashlib, "scrypt", scrypt)
    auth.burn_login_hash(SECRET)
    auth.verify_login_secret(SECRET, b"x" * 32, SALT, auth.LOGIN_HASH_PARAMS)
    assert len(calls) == 2
    cost = [{k: v for k, v in c.items() if k != "salt"} for c in calls]
    assert cost[0] == cost[1]


def test_fake_kdf_params_are_stable_and_look_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYSYNC_TESTONLY_WEAKEN_KDF")
    fake = auth.fake_kdf_params(b"s" * 32, "a@b.c")
    # HMAC-SHA256(server secret, "fake-salt" + e-mail), cut to the salt size: the same
    # answer across restarts and upgrades, or a changed answer would reveal the account
    # does not exist.
    assert fake.salt.hex() == "87761d646cacfef7dd156ad49151a14e"
    assert len(fake.salt) == crypto.SALT_SIZE
    assert (fake.log_n, fake.r, fake.p) == (crypto.KDF_LOG_N, crypto.KDF_R, crypto.KDF_P)
    assert auth.fake_kdf_params(b"s" * 32, "x@b.c").salt != fake.salt
    assert auth.fake_kdf_params(b"t" * 32, "a@b.c").salt != fake.salt


@pytest.mark.parametrize(
    ("given", "normal"),
    [("  Alice@Example.ORG \n", "alice@example.org"), ("a@b", "a@b")],
)
def test_normalize_email(given: str, normal: str) -> None:
    assert auth.normalize_email(given) == normal


def test_the_longest_email() -> None:
    longest = "a" * 250 + "@b.c"
    assert len(longest) == 254
    assert auth.normalize_email(longest) == longest
    with pytest.raises(UsageError, match=r"^that is not an e-mail address$"):
        auth.normalize_email("a" + longest)


@pytest.mark.parametrize("bad", ["", "ab", "a@", "@b", "a b@c", "a@b@c", "a@b\x00c", "a@\u200bb"])
def test_not_an_email(bad: str) -> None:
    with pytest.raises(UsageError, match=r"^that is not an e-mail address$"):
        auth.normalize_email(bad)


def test_new_token_digest_is_what_the_header_gives() -> None:
    token, digest = auth.new_token()
    assert len(token) == 32 and digest == hashlib.sha256(token).digest()
    for header in (
        f"Bearer {token.hex()}",
        f"bearer {token.hex().upper()}",
        f"BEARER  {token.hex()} ",
    ):
        assert auth.token_digest_from_header(header) == digest


def test_no_token() -> None:
    with pytest.raises(AuthError, match=r"^this call needs an access token; log in first$"):
        auth.token_digest_from_header(None)


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Basic " + "a" * 64, "Bearer " + "a" * 63, "Bearer " + "g" * 64, "a" * 64],
)
def test_malformed_tokens(header: str) -> None:
    with pytest.raises(
        AuthError,
        match=r"^malformed authorization metadata \(expected 'Bearer <64 hex digits>'\)$",
    ):
        auth.token_digest_from_header(header)


def test_invite_codes() -> None:
    codes = {auth.new_invite_code() for _ in range(50)}
    assert len(codes) == 50
    for code in codes:
        assert len(code) == auth.INVITE_LENGTH
        assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_invite_hash_ignores_case_spaces_and_dashes() -> None:
    # stored hashes of invites already handed out must keep matching
    expected = "051b058e42b48b1287414506ce03203567d8505b82b28e0b4d7906f43cde8114"
    for spelling in ("ABCD2345EFGH", "abcd-2345-efgh", " abcd 2345\tefgh\n"):
        assert auth.invite_hash(spelling).hex() == expected
    assert auth.invite_hash("ABCD2345EFGX") != auth.invite_hash("ABCD2345EFGH")


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.1.2.3:5678", "10.1.2.3"),
        ("ipv6:[::1]:5678", "[::1]"),
        ("ipv6:[fe80::1:2]:1", "[fe80::1:2]"),
        ("unix:/run/anysync.sock", "unix:/run/anysync.sock"),
        ("unix:a:b", "unix:a:b"),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert auth.peer_host(peer) == host
