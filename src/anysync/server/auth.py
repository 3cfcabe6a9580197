"""Who may do what: login-secret hashing, fake KDF answers, failed-login limits,
device tokens, invite codes.

The client never sends its password, only a 32-byte login secret derived from it
(crypto.derive_password_keys). The server still stores only a slow, salted hash of
that secret, so a stolen metadata.db is not a list of login credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from anysync import crypto
from anysync.errors import AuthError, UsageError
from anysync.types import KdfParams

LOGIN_SECRET_SIZE = 32

# The server's own hash of the login secret. The secret already carries scrypt 2^17 of
# work from the client; this hash only has to make a stolen database costly to use.
# Stored with each hash as "scrypt$log2(N)$r$p", so the parameters can be raised later.
LOGIN_HASH_PARAMS = "scrypt$14$8$1"  # ~35 ms per login on the reference machine

# RFC 4648 base32: capital letters and the digits 2-7, easy to read out and to type.
_INVITE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
INVITE_LENGTH = 20  # 100 bits
INVITE_DAYS = 7

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_MAX_EMAIL = 254


def hash_login_secret(
    secret: bytes, salt: bytes | None = None, params: str = LOGIN_HASH_PARAMS
) -> tuple[bytes, bytes, str]:
    """(hash, salt, params) of a login secret; a fresh salt unless one is given."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    algo, log_n, r, p = params.split("$")
    if algo != "scrypt":
        raise ValueError(f"unknown login hash {params!r}")
    digest = hashlib.scrypt(secret, salt=salt, n=1 << int(log_n), r=int(r), p=int(p), dklen=32)
    return digest, salt, params


def verify_login_secret(secret: bytes, stored: bytes, salt: bytes, params: str) -> bool:
    return hmac.compare_digest(hash_login_secret(secret, salt, params)[0], stored)


def burn_login_hash(secret: bytes) -> None:
    """Spend the time of one verification, so that an unknown e-mail is not
    answered faster than a wrong password."""
    hash_login_secret(secret, b"\0" * 16)


def fake_kdf_params(server_secret: bytes, email: str) -> KdfParams:
    """What PreLogin answers for an e-mail without an account: the same shape as a real
    answer and the same every time, so it does not reveal that the account is missing."""
    salt = hmac.new(server_secret, b"fake-salt" + email.encode(), hashlib.sha256).digest()
    return KdfParams(
        salt=salt[: crypto.SALT_SIZE],
        log_n=crypto.kdf_floor_log_n(),
        r=crypto.KDF_R,
        p=crypto.KDF_P,
    )


def normalize_email(email: str) -> str:
    """Stripped and lower-cased; UsageError unless it looks like an address."""
    cleaned = email.strip().lower()
    if len(cleaned) > _MAX_EMAIL or not _EMAIL.fullmatch(cleaned) or not cleaned.isprintable():
        raise UsageError("that is not an e-mail address")
    return cleaned


def new_token() -> tuple[bytes, bytes]:
    """(token, digest): the token goes to the device sealed, the digest into the DB."""
    token = crypto.random_token()
    return token, crypto.token_digest(token)


def token_digest_from_header(value: str | None) -> bytes:
    """'Bearer <64 hex>' → the digest to look the device up by."""
    if value is None:
        raise AuthError("this call needs an access token; log in first")
    scheme, _, token_hex = value.partition(" ")
    if scheme.lower() != "bearer" or not re.fullmatch(r"[0-9a-fA-F]{64}", token_hex.strip()):
        raise AuthError("malformed authorization metadata (expected 'Bearer <64 hex digits>')")
    return crypto.token_digest(bytes.fromhex(token_hex.strip()))


def new_invite_code() -> str:
    return "".join(secrets.choice(_INVITE_ALPHABET) for _ in range(INVITE_LENGTH))


def invite_hash(code: str) -> bytes:
    """How an invite is stored and looked up. Case, spaces and dashes do not matter,
    so a code read out over the phone still works."""
    cleaned = re.sub(r"[\s-]", "", code).upper()
    return hashlib.sha256(cleaned.encode()).digest()


def peer_host(peer: str) -> str:
    """gRPC's 'ipv4:1.2.3.4:5678' / 'ipv6:[::1]:5678' → the address without the port."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0]
    return peer
