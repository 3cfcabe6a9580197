"""master.keys key versions: the counter is written, authenticated, and guards replacement."""

from __future__ import annotations

import os

import pytest

from anysync import crypto
from anysync.client import keys
from anysync.errors import IntegrityError, WrongPassword

USER = "ab" * 16
KEK = b"k" * 32
MASTER = keys.MasterKeys.generate()


def wrap_v1(master: keys.MasterKeys, kek: bytes, user_id: str) -> bytes:
    """Version 1 as the code before key versions wrote it (docs/design.md §3)."""
    header = keys.MAGIC + bytes([1])
    nonce = os.urandom(crypto.NONCE_SIZE)
    plain = master.data_key + master.id_key + master.box_secret
    return header + nonce + crypto.aead_encrypt(kek, nonce, plain, header + user_id.encode())


@pytest.mark.parametrize("counter", [0, 1, 2**31, keys.MAX_COUNTER])
def test_version_2_round_trip_carries_the_counter(counter: int) -> None:
    blob = keys.wrap(MASTER, KEK, USER, counter=counter)
    assert blob[4] == 2
    assert keys.claimed_counter(blob) == counter
    assert keys.unwrap(blob, KEK, USER) == MASTER


def test_version_1_still_opens_and_counts_as_zero() -> None:
    blob = wrap_v1(MASTER, KEK, USER)
    assert keys.claimed_counter(blob) == 0
    assert keys.unwrap(blob, KEK, USER) == MASTER


def test_the_counter_is_authenticated() -> None:
    """A server cannot raise the claimed version of a copy the old password opens."""
    blob = bytearray(keys.wrap(MASTER, KEK, USER, counter=1))
    blob[5:9] = (9).to_bytes(4, "little")
    assert keys.claimed_counter(bytes(blob)) == 9  # the claim, before the key proves it
    with pytest.raises(WrongPassword):
        keys.unwrap(bytes(blob), KEK, USER)


def test_a_version_1_blob_relabelled_as_version_2_does_not_open() -> None:
    v1 = wrap_v1(MASTER, KEK, USER)
    relabelled = keys.MAGIC + bytes([2]) + (5).to_bytes(4, "little") + v1[5:]
    with pytest.raises(WrongPassword):
        keys.unwrap(relabelled, KEK, USER)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"ASMK",
        b"XXXX" + bytes(200),
        b"ASMK\x03" + bytes(128),  # unknown version
        b"ASMK\x02" + bytes(127),  # one byte short
        b"ASMK\x01" + bytes(132),  # a v1 header with a v2 length
    ],
)
def test_malformed_blobs_are_refused_without_the_key(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        keys.claimed_counter(blob)
    with pytest.raises(IntegrityError):
        keys.unwrap(blob, KEK, USER)


def test_counter_out_of_range_is_not_written() -> None:
    with pytest.raises(ValueError, match="counter"):
        keys.wrap(MASTER, KEK, USER, counter=keys.MAX_COUNTER + 1)
    with pytest.raises(ValueError, match="counter"):
        keys.wrap(MASTER, KEK, USER, counter=-1)


# ----------------------------------------------------------------- refuse_stale


def test_a_newer_copy_is_accepted() -> None:
    seen = keys.wrap(MASTER, KEK, USER, counter=1)
    keys.refuse_stale(seen, keys.wrap(MASTER, b"n" * 32, USER, counter=2))
    keys.refuse_stale(wrap_v1(MASTER, KEK, USER), seen)  # v1 (0) → v2 (1): an upgrade


def test_the_same_copy_is_accepted() -> None:
    seen = keys.wrap(MASTER, KEK, USER, counter=3)
    keys.refuse_stale(seen, seen)


def test_an_older_copy_is_refused() -> None:
    old = keys.wrap(MASTER, KEK, USER, counter=0)
    seen = keys.wrap(MASTER, b"n" * 32, USER, counter=1)
    with pytest.raises(IntegrityError, match=r"old keys.*version 0.*older than version 1"):
        keys.refuse_stale(seen, old)
    with pytest.raises(IntegrityError, match="older"):
        keys.refuse_stale(seen, wrap_v1(MASTER, KEK, USER))


def test_a_different_copy_of_the_same_version_is_refused() -> None:
    seen = keys.wrap(MASTER, KEK, USER, counter=4)
    other = keys.wrap(MASTER, KEK, USER, counter=4)  # fresh nonce: other bytes
    with pytest.raises(IntegrityError, match="same version 4"):
        keys.refuse_stale(seen, other)


def test_two_version_1_copies_point_to_a_fresh_login() -> None:
    """Both sides without a counter: the old password change cannot be told from a replay."""
    with pytest.raises(IntegrityError, match="log this device in again"):
        keys.refuse_stale(wrap_v1(MASTER, KEK, USER), wrap_v1(MASTER, KEK, USER))


def test_a_malformed_offer_is_refused() -> None:
    seen = keys.wrap(MASTER, KEK, USER, counter=1)
    with pytest.raises(IntegrityError, match="the server sent bad keys"):
        keys.refuse_stale(seen, b"ASMK\x09" + bytes(128))
