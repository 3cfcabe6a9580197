"""The account's keys and the `master.keys` format (client side only).

master.keys, version 1 (all sizes in bytes):

    magic      4   b"ASMK"
    version    1   0x01
    nonce     12   random
    ciphertext 112 AES-256-GCM(kek, nonce, plaintext, AAD) incl. 16-byte tag

    plaintext  = data_key 32 | id_key 32 | box_secret 32
    AAD        = b"ASMK" | version | user_id (32 ASCII hex digits)

kek comes from the password (crypto.derive_password_keys). A password change re-wraps
these bytes under a new kek; no data is re-encrypted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from anysync import crypto
from anysync.errors import IntegrityError, WrongPassword

MAGIC = b"ASMK"
VERSION = 1
_PLAIN_SIZE = 3 * crypto.KEY_SIZE
_SIZE = len(MAGIC) + 1 + crypto.NONCE_SIZE + _PLAIN_SIZE + crypto.TAG_SIZE


@dataclass(frozen=True, slots=True)
class MasterKeys:
    data_key: bytes  # content and metadata encryption (per-object keys via HKDF)
    id_key: bytes  # keyed blob IDs, ref names and the chunker's gear table
    box_secret: bytes  # X25519, for sharing between accounts (later work)

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), crypto.new_box_keypair()[0])

    def chunker_seed(self) -> int:
        """63-bit non-zero seed for the gear table; keeps cut points private.

        63, not 64 bits: pyfastcdc shifts the seed left by one in a C uint64.
        """
        raw = int.from_bytes(crypto.hkdf(self.id_key, b"anysync v1 chunker", 8), "little")
        return (raw >> 1) or 1


def _aad(user_id: str) -> bytes:
    return MAGIC + bytes([VERSION]) + user_id.encode("ascii")


def wrap(keys: MasterKeys, kek: bytes, user_id: str) -> bytes:
    nonce = os.urandom(crypto.NONCE_SIZE)
    plain = keys.data_key + keys.id_key + keys.box_secret
    return MAGIC + bytes([VERSION]) + nonce + crypto.aead_encrypt(kek, nonce, plain, _aad(user_id))


def unwrap(blob: bytes, kek: bytes, user_id: str) -> MasterKeys:
    """Raises WrongPassword if the kek does not open it, IntegrityError if malformed."""
    if len(blob) != _SIZE or blob[:4] != MAGIC:
        raise IntegrityError("master.keys is malformed")
    if blob[4] != VERSION:
        raise IntegrityError(f"master.keys has unsupported version {blob[4]}")
    nonce, ciphertext = blob[5 : 5 + crypto.NONCE_SIZE], blob[5 + crypto.NONCE_SIZE :]
    try:
        plain = crypto.aead_decrypt(kek, nonce, ciphertext, _aad(user_id))
    except IntegrityError:
        raise WrongPassword() from None
    return MasterKeys(plain[:32], plain[32:64], plain[64:96])
