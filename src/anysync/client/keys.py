"""The account's keys and the `master.keys` format (client side only).

master.keys, version 2 (written since key versions were added; all sizes in bytes):

    magic      4   b"ASMK"
    version    1   0x02
    counter    4   u32 little-endian: 0 at signup, +1 with every password change
    nonce     12   random
    ciphertext 112 AES-256-GCM(kek, nonce, plaintext, AAD) incl. 16-byte tag

    plaintext  = data_key 32 | id_key 32 | box_secret 32
    AAD        = b"ASMK" | version | counter | user_id (32 ASCII hex digits)

Version 1 (still read, never written) has no counter field and counts as counter 0:

    magic 4 | version 1 (0x01) | nonce 12 | ciphertext 112;  AAD = b"ASMK" | version | user_id

The counter lets a device refuse a server that replays an older master.keys (one the
old password still opens) after a password change: `claimed_counter` reads it without
the key, and `unwrap` authenticates it. kek comes from the password
(crypto.derive_password_keys). A password change re-wraps these bytes under a new kek;
no data is re-encrypted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from anysync import crypto
from anysync.errors import IntegrityError, WrongPassword

MAGIC = b"ASMK"
VERSION = 2  # the version `wrap` writes
_PLAIN_SIZE = 3 * crypto.KEY_SIZE
_SEALED_SIZE = crypto.NONCE_SIZE + _PLAIN_SIZE + crypto.TAG_SIZE
_COUNTER_SIZE = 4
# Bytes before the nonce, per version: magic, version, and (v2) the counter.
_HEADER_SIZE = {1: len(MAGIC) + 1, 2: len(MAGIC) + 1 + _COUNTER_SIZE}
MAX_COUNTER = 2**32 - 1


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


def _version(blob: bytes) -> int:
    """The format version, after checking magic and length; IntegrityError if malformed."""
    if len(blob) < len(MAGIC) + 1 or blob[:4] != MAGIC:
        raise IntegrityError("master.keys is malformed")
    version = blob[4]
    if version not in _HEADER_SIZE:
        raise IntegrityError(f"master.keys has unsupported version {version}")
    if len(blob) != _HEADER_SIZE[version] + _SEALED_SIZE:
        raise IntegrityError("master.keys is malformed")
    return version


def claimed_counter(blob: bytes) -> int:
    """The key version the blob claims, read without the key (version 1 counts as 0).

    Only `unwrap` proves it: compare claims to refuse a replay before asking for the
    password, and trust a counter only once the blob has opened.
    """
    if _version(blob) == 1:
        return 0
    return int.from_bytes(blob[5 : 5 + _COUNTER_SIZE], "little")


def wrap(keys: MasterKeys, kek: bytes, user_id: str, *, counter: int = 0) -> bytes:
    """A version-2 master.keys with this key version (0 at signup, +1 per passwd)."""
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"master.keys counter out of range: {counter}")
    header = MAGIC + bytes([VERSION]) + counter.to_bytes(_COUNTER_SIZE, "little")
    nonce = os.urandom(crypto.NONCE_SIZE)
    plain = keys.data_key + keys.id_key + keys.box_secret
    aad = header + user_id.encode("ascii")
    return header + nonce + crypto.aead_encrypt(kek, nonce, plain, aad)


def unwrap(blob: bytes, kek: bytes, user_id: str) -> MasterKeys:
    """Raises WrongPassword if the kek does not open it, IntegrityError if malformed.

    The header (version and counter) is part of the AAD, so a changed counter fails
    like a wrong password: the claimed counter of a blob that opens is authentic.
    """
    header = blob[: _HEADER_SIZE[_version(blob)]]
    nonce = blob[len(header) : len(header) + crypto.NONCE_SIZE]
    ciphertext = blob[len(header) + crypto.NONCE_SIZE :]
    try:
        plain = crypto.aead_decrypt(kek, nonce, ciphertext, header + user_id.encode("ascii"))
    except IntegrityError:
        raise WrongPassword() from None
    return MasterKeys(plain[:32], plain[32:64], plain[64:96])


def refuse_stale(seen: bytes, offered: bytes) -> None:
    """Refuse an offered master.keys (the server's) that is not newer than `seen`.

    `seen` is this device's copy, already known to be well-formed. After a password
    change only a higher key version may replace it: a lower one is an old copy the
    server replays (which the old password would still open), and an equal one with
    other bytes is not a copy this account ever made. Neither is worth a password try.
    """
    seen_version = claimed_counter(seen)
    try:
        offered_version = claimed_counter(offered)
    except IntegrityError as exc:
        raise IntegrityError(f"the server sent bad keys: {exc.message}") from None
    unchanged = "refusing them; your keys on this device are unchanged"
    if offered_version < seen_version:
        raise IntegrityError(
            f"the server sent old keys: its master.keys (key version {offered_version}) is "
            f"older than version {seen_version}, which this device has seen; {unchanged} "
            "(the server's account data was rolled back or tampered with: tell its operator)"
        )
    if offered_version == seen_version and offered != seen:
        hint = (
            " (if the password was changed with an anysync older than key versions, log this "
            "device in again in a fresh ANYSYNC_HOME)"
            if seen_version == 0
            else ""
        )
        raise IntegrityError(
            "the server sent master.keys that differ from this device's copy at the same "
            f"version {seen_version}; {unchanged}{hint}"
        )
