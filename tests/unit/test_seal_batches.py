"""The write queue is sealed on the pool in runs of blobs, not one task per blob
(repository._batches): every blob is sealed once, in order, and stored."""

from __future__ import annotations

import os

from anysync.client.repo import repository
from anysync.client.repo.repository import Repository
from anysync.types import BlobId, BlobKind
from tests.unit.fakes import KEYS, MemoryRemote


def _item(size: int, n: int) -> tuple[BlobId, BlobKind, bytes]:
    return BlobId(n.to_bytes(32, "big")), BlobKind.DATA, bytes(size)


def test_runs_keep_the_order_and_cut_by_bytes_and_by_count() -> None:
    small = [_item(10, n) for n in range(repository.SEAL_BATCH_BLOBS * 2 + 1)]
    runs = list(repository._batches(small))
    assert [len(r) for r in runs] == [repository.SEAL_BATCH_BLOBS] * 2 + [1]
    assert [i for r in runs for i in r] == small
    big = [_item(repository.SEAL_BATCH_BYTES, n) for n in range(3)]
    assert [len(r) for r in repository._batches(big)] == [1, 1, 1]
    assert list(repository._batches([])) == []


def test_many_small_blobs_are_all_sealed_and_read_back() -> None:
    remote = MemoryRemote()
    repo = Repository(remote, KEYS)
    blobs = [repo.save(BlobKind.DATA, os.urandom(100)) for _ in range(1500)]
    repo.finish()
    got = repo.load_many(BlobKind.DATA, blobs)
    assert all(repo.blob_id(v) == k for k, v in got.items() if isinstance(v, bytes))
    assert len(got) == 1500 and all(isinstance(v, bytes) for v in got.values())
    repo.close()
