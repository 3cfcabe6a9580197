"""device.keys: each protection opens only with its own key, and a changed file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anysync import crypto
from anysync.client import devicekeys
from anysync.client.devicekeys import Protection
from anysync.client.keys import MasterKeys
from anysync.errors import KeysLocked, LocalStateError, WrongPassword

USER = "0123456789abcdef0123456789abcdef"
WHERE = Path("/home/u/.config/anysync/device.keys")


def _reread(f: devicekeys.DeviceKeyFile) -> devicekeys.DeviceKeyFile:
    return devicekeys.parse(f.to_json(), WHERE)


def test_plain_file_round_trips() -> None:
    keys = MasterKeys.generate()
    f = _reread(devicekeys.plain_file(keys, USER))
    assert f.protection is Protection.NONE and f.user_id == USER
    assert devicekeys.open_file(f, None) == keys


def test_keyring_sealed_file_opens_only_with_its_key() -> None:
    keys = MasterKeys.generate()
    wrap = bytes(range(32))
    f = _reread(devicekeys.sealed_file(keys, USER, Protection.KEYRING, wrap))
    assert keys.data_key.hex() not in f.to_json().decode()
    assert devicekeys.open_file(f, wrap) == keys
    with pytest.raises(KeysLocked, match="does not open"):
        devicekeys.open_file(f, bytes(32))


def test_passphrase_file_round_trips_and_refuses_another_passphrase() -> None:
    keys = MasterKeys.generate()
    kdf = crypto.new_kdf_params()
    f = devicekeys.sealed_file(
        keys, USER, Protection.PASSPHRASE, devicekeys.passphrase_key("right", kdf), kdf
    )
    f = _reread(f)
    assert f.kdf == kdf
    assert devicekeys.open_file(f, devicekeys.passphrase_key("right", f.kdf)) == keys
    with pytest.raises(WrongPassword, match="wrong device passphrase"):
        devicekeys.open_file(f, devicekeys.passphrase_key("wrong", f.kdf))


def test_protection_and_account_are_bound_into_the_seal() -> None:
    """A sealed file edited to claim another protection or account does not open."""
    keys = MasterKeys.generate()
    wrap = bytes(range(32))
    doc = json.loads(devicekeys.sealed_file(keys, USER, Protection.KEYRING, wrap).to_json())
    other = dict(doc, user_id="f" * 32)
    with pytest.raises(KeysLocked):
        devicekeys.open_file(devicekeys.parse(json.dumps(other).encode(), WHERE), wrap)
    as_passphrase = dict(
        doc, protection="passphrase", kdf={"salt": "00" * 16, "log_n": 10, "r": 8, "p": 1}
    )
    with pytest.raises(WrongPassword):
        devicekeys.open_file(devicekeys.parse(json.dumps(as_passphrase).encode(), WHERE), wrap)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b"{not json", "is unreadable"),
        (b'{"version": 1, "user_id": "u", "protection": "none", "keys": "00"}', "is unreadable"),
        (b'{"version": 1, "user_id": "u", "protection": "tpm", "keys": ""}', "is unreadable"),
        (b'{"version": 2, "user_id": "u", "protection": "none"}', "upgrade anysync"),
    ],
)
def test_a_damaged_or_newer_file_is_named_with_the_fix(text: bytes, said: str) -> None:
    with pytest.raises(LocalStateError, match=said) as err:
        devicekeys.parse(text, WHERE)
    assert str(WHERE) in err.value.message


def test_keyring_entries_differ_per_home(tmp_path: Path) -> None:
    a = devicekeys.keyring_user(USER, tmp_path / "a")
    b = devicekeys.keyring_user(USER, tmp_path / "b")
    assert a != b and USER in a
