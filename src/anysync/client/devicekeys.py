"""This device's unlocked account keys (`device.keys`) and how they are protected.

Only `signup`, `login` and `passwd` derive a key from the account password (scrypt,
~0.4 s and 128 MiB). They leave the unwrapped account keys in `device.keys`, mode 0600,
beside the access token, and every other command opens that file instead: like an SSH
client's private key, the device itself is the credential. What a stolen, unlocked
device exposes, and why, is in docs/design.md §3 ("The device key file").

device.keys, version 1: JSON, one of

    {"version": 1, "user_id": U, "protection": "none",       "keys": HEX}
    {"version": 1, "user_id": U, "protection": "keyring",    "sealed": HEX}
    {"version": 1, "user_id": U, "protection": "passphrase", "sealed": HEX, "kdf": KDF}

    keys   = data_key 32 | id_key 32 | box_secret 32              (96 bytes, HEX: 192)
    sealed = nonce 12 | AES-256-GCM(wrap_key, nonce, keys, AAD)   (124 bytes)
    AAD    = b"anysync device.keys v1" | 0x00 | protection | 0x00 | U
    KDF    = {"salt": hex, "log_n": n, "r": r, "p": p}            (as in config.json)

The wrap key of "keyring" is 32 random bytes kept by the desktop keyring (Secret
Service, through the `keyring` package) under service "anysync", user
`keyring_user(U, home)`; the file alone opens nothing. The wrap key of "passphrase" is
HKDF(scrypt(device passphrase, KDF)): a user who chose it pays scrypt per command.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from anysync import crypto
from anysync.client.keys import MasterKeys
from anysync.errors import IntegrityError, KeysLocked, LocalStateError, WrongPassword
from anysync.types import KdfParams

VERSION = 1
KEYRING_SERVICE = "anysync"
KEYRING_TIMEOUT = float(os.environ.get("ANYSYNC_TESTONLY_KEYRING_TIMEOUT", "10"))
_AAD_PREFIX = b"anysync device.keys v1"
_PLAIN_SIZE = 3 * crypto.KEY_SIZE
T = TypeVar("T")


class Protection(Enum):
    NONE = "none"
    KEYRING = "keyring"
    PASSPHRASE = "passphrase"  # noqa: S105 (a name, not a secret)


@dataclass(frozen=True)
class DeviceKeyFile:
    """device.keys as read, not yet opened."""

    user_id: str
    protection: Protection
    payload: bytes  # the plain keys (NONE) or nonce | ciphertext
    kdf: KdfParams | None = None  # PASSPHRASE only

    def to_json(self) -> bytes:
        doc: dict[str, object] = {
            "version": VERSION,
            "user_id": self.user_id,
            "protection": self.protection.value,
        }
        if self.protection is Protection.NONE:
            doc["keys"] = self.payload.hex()
        else:
            doc["sealed"] = self.payload.hex()
        if self.kdf is not None:
            doc["kdf"] = {
                "salt": self.kdf.salt.hex(),
                "log_n": self.kdf.log_n,
                "r": self.kdf.r,
                "p": self.kdf.p,
            }
        return json.dumps(doc, indent=2).encode()


def parse(data: bytes, where: Path) -> DeviceKeyFile:
    """The file's fields; LocalStateError naming the file if it is not a device.keys."""
    try:
        doc = json.loads(data)
        if doc["version"] != VERSION:
            raise LocalStateError(
                f"{where} has version {doc['version']}, which this anysync does not read; "
                "upgrade anysync"
            )
        protection = Protection(doc["protection"])
        payload = bytes.fromhex(doc["keys" if protection is Protection.NONE else "sealed"])
        kdf = None
        if protection is Protection.PASSPHRASE:
            k = doc["kdf"]
            kdf = KdfParams(bytes.fromhex(k["salt"]), int(k["log_n"]), int(k["r"]), int(k["p"]))
        expected = _PLAIN_SIZE if protection is Protection.NONE else _sealed_size()
        if len(payload) != expected:
            raise ValueError("wrong length")
        return DeviceKeyFile(str(doc["user_id"]), protection, payload, kdf)
    except (ValueError, KeyError, TypeError):
        raise LocalStateError(
            f"{where} is unreadable; run `anysync keys protect none --from-password` "
            "to write it again from the account password"
        ) from None


def _sealed_size() -> int:
    return crypto.NONCE_SIZE + _PLAIN_SIZE + crypto.TAG_SIZE


def _aad(protection: Protection, user_id: str) -> bytes:
    return b"\0".join((_AAD_PREFIX, protection.value.encode(), user_id.encode("ascii")))


def _plain(keys: MasterKeys) -> bytes:
    return keys.data_key + keys.id_key + keys.box_secret


def _keys(plain: bytes) -> MasterKeys:
    return MasterKeys(plain[:32], plain[32:64], plain[64:96])


def plain_file(keys: MasterKeys, user_id: str) -> DeviceKeyFile:
    return DeviceKeyFile(user_id, Protection.NONE, _plain(keys))


def sealed_file(
    keys: MasterKeys,
    user_id: str,
    protection: Protection,
    wrap_key: bytes,
    kdf: KdfParams | None = None,
) -> DeviceKeyFile:
    nonce = os.urandom(crypto.NONCE_SIZE)
    sealed = crypto.aead_encrypt(wrap_key, nonce, _plain(keys), _aad(protection, user_id))
    return DeviceKeyFile(user_id, protection, nonce + sealed, kdf)


def open_file(f: DeviceKeyFile, wrap_key: bytes | None) -> MasterKeys:
    """The keys; WrongPassword if the wrap key does not open them."""
    if f.protection is Protection.NONE:
        return _keys(f.payload)
    assert wrap_key is not None
    nonce, sealed = f.payload[: crypto.NONCE_SIZE], f.payload[crypto.NONCE_SIZE :]
    try:
        return _keys(crypto.aead_decrypt(wrap_key, nonce, sealed, _aad(f.protection, f.user_id)))
    except IntegrityError:  # the wrong key, or a changed file
        if f.protection is Protection.PASSPHRASE:
            raise WrongPassword("wrong device passphrase") from None
        raise KeysLocked(
            "the key in the desktop keyring does not open device.keys (the keyring entry "
            "was replaced?); run `anysync keys protect keyring --from-password`"
        ) from None


def passphrase_key(passphrase: str, kdf: KdfParams) -> bytes:
    if not passphrase:
        raise WrongPassword("the device passphrase is empty")
    return crypto.hkdf(crypto.scrypt(passphrase.encode("utf-8"), kdf), b"anysync device passphrase")


# ------------------------------------------------------------------- the desktop keyring


def keyring_user(user_id: str, home: Path) -> str:
    """One entry per account and home: two homes of one account keep separate keys."""
    digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:16]
    return f"device-keys {user_id} {digest}"


def keyring_get(user: str) -> bytes:
    """The wrap key stored in the keyring; KeysLocked with what to do when it cannot be had."""
    keyring, errors = _keyring()
    try:
        value = _in_time(lambda: keyring.get_password(KEYRING_SERVICE, user))
    except errors.KeyringLocked:
        raise KeysLocked(
            "the desktop keyring is locked, and this device's keys are kept in it; unlock "
            "it (log in to the desktop session) and run the command again"
        ) from None
    except errors.KeyringError as exc:
        raise KeysLocked(_unavailable(exc)) from None
    if value is None:
        raise KeysLocked(
            "the desktop keyring has no key for this device (was the entry deleted?); run "
            "`anysync keys protect keyring --from-password`"
        )
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != crypto.KEY_SIZE:
        raise KeysLocked(
            "the desktop keyring's entry for this device is malformed; run "
            "`anysync keys protect keyring --from-password`"
        )
    return key


def keyring_set(user: str, key: bytes) -> None:
    keyring, errors = _keyring()
    try:
        _in_time(lambda: keyring.set_password(KEYRING_SERVICE, user, key.hex()))
    except errors.KeyringLocked:
        raise KeysLocked(
            "the desktop keyring is locked; unlock it and run the command again"
        ) from None
    except errors.KeyringError as exc:
        raise KeysLocked(_unavailable(exc)) from None


def keyring_delete(user: str) -> None:
    """Forget the entry, if the keyring is there to ask; a leftover entry opens nothing."""
    try:
        keyring, _ = _keyring()
        _in_time(lambda: keyring.delete_password(KEYRING_SERVICE, user))
    except Exception:  # locked, absent, or no such entry: nothing more to do
        return


def _in_time(call: Callable[[], T]) -> T:
    """`call()`, or KeysLocked after KEYRING_TIMEOUT seconds: neither `keyring` nor the
    D-Bus library under it limits a call, and a hung keyring daemon must not hang every
    command (a cron backup would pile up). The abandoned call's thread is a daemon."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, name="keyring", daemon=True)
    worker.start()
    worker.join(KEYRING_TIMEOUT)
    if failure:
        raise failure[0]
    if not result:
        raise KeysLocked(
            f"the desktop keyring did not answer in {KEYRING_TIMEOUT:.0f} s; check its "
            "daemon (gnome-keyring, kwallet) and run the command again"
        )
    return result[0]


def _unavailable(exc: Exception) -> str:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"no usable desktop keyring ({detail}); start a Secret Service (GNOME Keyring, "
        "KWallet) in this session, or use `anysync keys protect none|passphrase`"
    )


def _keyring() -> tuple[ModuleType, ModuleType]:
    """The `keyring` package, imported only by the few that use it (it is slow to load)."""
    try:
        keyring = importlib.import_module("keyring")
        errors = importlib.import_module("keyring.errors")
    except ImportError:
        raise KeysLocked(
            "the `keyring` package is not installed; install anysync with its `keyring` "
            "extra (pip install 'anysync[keyring]'), or use `anysync keys protect none`"
        ) from None
    return keyring, errors
