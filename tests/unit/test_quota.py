"""Quota arithmetic: an upload that exactly fills the quota fits, one byte more does
not; 0 means unlimited; the recheck inside add_pack counts what is already used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.errors import NotFound, QuotaExceeded
from anysync.server.metadata import Metadata, NewAccount, NewDevice, check_quota
from anysync.types import BlobId, BlobLocation, KdfParams, PackId

NOW = 1_800_000_000


def test_exactly_full_fits() -> None:
    check_quota(600, 400, 1000)
    check_quota(0, 1000, 1000)
    check_quota(10**15, 10**15, 0)  # unlimited


def test_one_byte_over_is_refused_with_the_numbers() -> None:
    with pytest.raises(
        QuotaExceeded,
        match=r"^quota exceeded: 600 B of 1000 B used, and this upload needs 401 B more$",
    ):
        check_quota(600, 401, 1000)
    with pytest.raises(QuotaExceeded):
        check_quota(1001, 0, 1000)  # already over (the quota was lowered)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


def account(db: Metadata, email: str) -> int:
    user, _ = db.create_account(
        NewAccount(
            user_id=os.urandom(16).hex(),
            email=email,
            kdf=KdfParams(os.urandom(16), 17, 8, 1),
            login_hash=os.urandom(32),
            login_hash_salt=os.urandom(16),
            login_hash_params="scrypt$14$8$1",
            master_keys=b"ciphertext",
        ),
        NewDevice("laptop", os.urandom(32), os.urandom(32)),
        None,
        NOW,
    )
    return user.id


def add(db: Metadata, user: int, size: int, quota: int) -> PackId:
    pack = PackId.random()
    blob = BlobLocation(BlobId(os.urandom(32)), pack, 0, size)
    db.add_pack(user, pack, size, [blob], quota, NOW)
    return pack


def used(db: Metadata, email: str) -> int:
    user = db.user_by_email(email)
    assert user is not None
    return user.used_bytes


def test_add_pack_counts_usage_per_account_up_to_the_quota(db: Metadata) -> None:
    a, b = account(db, "a@example.org"), account(db, "b@example.org")
    add(db, a, 600, 1000)
    add(db, b, 900, 1000)  # another account's usage does not count against a
    add(db, a, 400, 1000)  # exactly full
    assert (used(db, "a@example.org"), used(db, "b@example.org")) == (1000, 900)
    with pytest.raises(QuotaExceeded, match="1000 B of 1000 B used"):
        add(db, a, 1, 1000)
    assert used(db, "a@example.org") == 1000  # nothing recorded for the refused pack
    add(db, a, 5000, 0)  # unlimited
    assert used(db, "a@example.org") == 6000


def test_set_quota(db: Metadata) -> None:
    account(db, "a@example.org")
    db.set_quota("a@example.org", 123)
    assert db.user_by_email("a@example.org").quota_bytes == 123  # type: ignore[union-attr]
    db.set_quota("a@example.org", None)
    assert db.user_by_email("a@example.org").quota_bytes is None  # type: ignore[union-attr]
    with pytest.raises(NotFound, match=r"no account with e-mail nobody@example\.org"):
        db.set_quota("nobody@example.org", 1)
