from __future__ import annotations

import pytest

from anysync import crypto
from anysync.client import keys
from anysync.errors import IntegrityError, WrongPassword
from anysync.types import KdfParams


def test_password_keys_are_deterministic_and_distinct() -> None:
    params = crypto.new_kdf_params()
    kek, login = crypto.derive_password_keys("correct horse", params)
    assert (kek, login) == crypto.derive_password_keys("correct horse", params)
    assert kek != login
    assert crypto.derive_password_keys("correct horsf", params)[0] != kek


def test_kdf_floor_refuses_weak_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYSYNC_TESTONLY_WEAKEN_KDF")
    weak = KdfParams(b"\0" * 16, 14, 8, 1)
    with pytest.raises(IntegrityError, match="weaker"):
        crypto.derive_password_keys("pw", weak)
    assert crypto.new_kdf_params().log_n == 17


def test_master_keys_round_trip_and_wrong_password() -> None:
    master = keys.MasterKeys.generate()
    params = crypto.new_kdf_params()
    kek, _ = crypto.derive_password_keys("pw1", params)
    blob = keys.wrap(master, kek, "ab" * 16)
    assert keys.unwrap(blob, kek, "ab" * 16) == master
    wrong, _ = crypto.derive_password_keys("pw2", params)
    with pytest.raises(WrongPassword):
        keys.unwrap(blob, wrong, "ab" * 16)


def test_master_keys_bound_to_user_id() -> None:
    master = keys.MasterKeys.generate()
    kek = b"k" * 32
    blob = keys.wrap(master, kek, "ab" * 16)
    with pytest.raises(WrongPassword):
        keys.unwrap(blob, kek, "cd" * 16)


def test_master_keys_tamper_detected() -> None:
    kek = b"k" * 32
    blob = bytearray(keys.wrap(keys.MasterKeys.generate(), kek, "ab" * 16))
    blob[-1] ^= 1
    with pytest.raises(WrongPassword):
        keys.unwrap(bytes(blob), kek, "ab" * 16)
    with pytest.raises(IntegrityError):
        keys.unwrap(bytes(blob[:-1]), kek, "ab" * 16)


def test_sealed_token_opens_only_with_the_device_key() -> None:
    secret, public = crypto.new_box_keypair()
    other, _ = crypto.new_box_keypair()
    token = crypto.random_token()
    sealed = crypto.seal_to(public, token)
    assert crypto.open_sealed(secret, sealed) == token
    with pytest.raises(IntegrityError):
        crypto.open_sealed(other, sealed)


def test_keyed_hash_depends_on_key() -> None:
    assert crypto.keyed_hash(b"a" * 32, b"x") != crypto.keyed_hash(b"b" * 32, b"x")
    assert len(crypto.keyed_hash(b"a" * 32, b"x")) == 32
