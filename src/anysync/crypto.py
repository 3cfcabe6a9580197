"""Thin wrapper over `cryptography`, `blake3` and PyNaCl. Everything else calls this.

Primitives only; the formats built from them live with their owners (keys.py for
master.keys, repo/envelope.py for stored blobs).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from anysync import faults
from anysync.errors import IntegrityError, UsageError
from anysync.types import KdfParams

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
SALT_SIZE = 16

# scrypt N=2^17, r=8, p=1 (DESIGN.md §2). Clients refuse anything weaker: a malicious
# server could otherwise hand out cheap parameters to speed up an offline guess.
KDF_LOG_N = 17
KDF_R = 8
KDF_P = 1
# Tests only: a weak KDF keeps a suite of hundreds of logins fast. Never set in production;
# whoever controls a client's environment controls the client anyway.
_WEAK_ENV = "ANYSYNC_TESTONLY_WEAKEN_KDF"
_WEAK_LOG_N = 10


def kdf_floor_log_n() -> int:
    return _WEAK_LOG_N if os.environ.get(_WEAK_ENV) == "1" else KDF_LOG_N


def new_kdf_params() -> KdfParams:
    return KdfParams(salt=os.urandom(SALT_SIZE), log_n=kdf_floor_log_n(), r=KDF_R, p=KDF_P)


def check_kdf_params(params: KdfParams) -> None:
    """Refuse parameters below the floor or absurdly above it (a denial of service)."""
    if len(params.salt) != SALT_SIZE:
        raise IntegrityError("the server sent a malformed KDF salt")
    if params.log_n < kdf_floor_log_n() or params.r < KDF_R or params.p < KDF_P:
        raise IntegrityError(
            "the server asked for key-derivation parameters weaker than this client accepts; "
            "refusing to derive keys (is this the right server?)"
        )
    if params.log_n > 22 or params.r > 32 or params.p > 16:
        raise IntegrityError("the server asked for unreasonably expensive KDF parameters")


def scrypt(secret: bytes, params: KdfParams, length: int = KEY_SIZE) -> bytes:
    # Only signup, login, passwd and a passphrase-protected device.keys get here; a
    # test proves it by making this point fatal for every other command.
    faults.point("crypto.scrypt")
    n = 1 << params.log_n
    maxmem = 128 * params.r * n * params.p + (64 << 20)
    return hashlib.scrypt(
        secret, salt=params.salt, n=n, r=params.r, p=params.p, maxmem=maxmem, dklen=length
    )


def hkdf(key: bytes, info: bytes, length: int = KEY_SIZE, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def derive_password_keys(password: str, params: KdfParams) -> tuple[bytes, bytes]:
    """password → (kek, login_secret). The server only ever sees the login secret."""
    if not password:
        raise UsageError("the password is empty")
    check_kdf_params(params)
    root = scrypt(password.encode("utf-8"), params)
    return hkdf(root, b"anysync v1 kek"), hkdf(root, b"anysync v1 login secret")


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes | memoryview, aad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
    """Raises IntegrityError when the tag does not verify (tampered, wrong key or AAD)."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise IntegrityError("authentication failed: the data was tampered with") from None


def keyed_hash(key: bytes, data: bytes | memoryview) -> bytes:
    """Keyed BLAKE3, 32 bytes. Releases the GIL on large inputs."""
    return blake3.blake3(data, key=key, max_threads=1).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def random_token() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def token_digest(token: bytes) -> bytes:
    """How the server stores a 256-bit random token: a plain SHA-256 is enough."""
    return hashlib.sha256(token).digest()


def new_box_keypair() -> tuple[bytes, bytes]:
    """X25519 key pair (secret, public), 32 bytes each."""
    sk = PrivateKey.generate()
    return bytes(sk), bytes(sk.public_key)


def box_public_from_secret(secret: bytes) -> bytes:
    return bytes(PrivateKey(secret).public_key)


def seal_to(public_key: bytes, message: bytes) -> bytes:
    """NaCl sealed box: only the holder of the matching secret key can open it."""
    return bytes(SealedBox(PublicKey(public_key)).encrypt(message))


def open_sealed(secret_key: bytes, sealed: bytes) -> bytes:
    try:
        return bytes(SealedBox(PrivateKey(secret_key)).decrypt(sealed))
    except CryptoError:
        raise IntegrityError("could not open the sealed access token") from None
