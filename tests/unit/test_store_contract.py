"""The ObjectStore contract (anysync.store.base), run against every store.

To add a backend, add a factory to STORES; every test here then runs against it.
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from anysync.errors import NotFound, UsageError
from anysync.store import (
    READ_CHUNK,
    LocalStore,
    ObjectStore,
    OutOfRangeError,
    RetryingStore,
    S3Settings,
    S3Store,
    open_store,
)
from tests import s3server


def _local(request: pytest.FixtureRequest, tmp: Path) -> ObjectStore:
    return LocalStore(tmp / "objects")


def _s3(request: pytest.FixtureRequest, tmp: Path) -> ObjectStore:
    """A fresh bucket on the session's real S3 server (SeaweedFS), with retries."""
    server = request.getfixturevalue("s3_server")
    inner = S3Store(
        server.endpoint, f"t{uuid.uuid4().hex[:16]}", s3server.ACCESS_KEY, s3server.SECRET_KEY
    )
    inner.ensure_bucket()
    return RetryingStore(inner, tmp / "spool")


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], ObjectStore]] = {
    "local": _local,
    "s3": _s3,
}

KEY = "0123456789abcdef0123456789abcdef/ab/ab00ff"


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return STORES[request.param](request, tmp_path)


def _get(store: ObjectStore, key: str, offset: int = 0, length: int = 0) -> bytes:
    return b"".join(store.get_range(key, offset, length))


class _Failing(io.RawIOBase):
    """A source that breaks after `after` bytes, like a client going away."""

    def __init__(self, after: int) -> None:
        self.left = after

    def read(self, size: int = -1, /) -> bytes:
        if self.left <= 0:
            raise ConnectionResetError("the source went away")
        n = min(size, self.left)
        self.left -= n
        return b"x" * n


def test_put_then_get_from_a_stream(store: ObjectStore) -> None:
    data = b"hello pack" * 1000
    store.put(KEY, io.BytesIO(data), len(data))
    assert _get(store, KEY) == data
    assert store.size(KEY) == len(data)


def test_put_from_a_path(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a file")
    store.put(KEY, src, 11)
    assert _get(store, KEY) == b"from a file"


def test_put_reads_exactly_size_bytes(store: ObjectStore) -> None:
    source = io.BytesIO(b"0123456789")
    store.put(KEY, source, 4)
    assert _get(store, KEY) == b"0123"


def test_empty_object(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b""), 0)
    assert store.size(KEY) == 0
    assert _get(store, KEY) == b""


def test_put_is_idempotent_and_replaces_atomically(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"same"), 4)
    store.put(KEY, io.BytesIO(b"same"), 4)
    assert _get(store, KEY) == b"same"
    store.put(KEY, io.BytesIO(b"other!"), 6)
    assert _get(store, KEY) == b"other!"
    assert list(store.list()) == [KEY]


def test_short_source_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(UsageError, match="ended after 3 of 10"):
        store.put(KEY, io.BytesIO(b"abc"), 10)
    with pytest.raises(NotFound):
        store.size(KEY)
    assert list(store.list()) == []


def test_failing_source_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(ConnectionResetError):
        store.put(KEY, _Failing(after=READ_CHUNK + 10), 3 * READ_CHUNK)
    with pytest.raises(NotFound):
        store.size(KEY)
    assert list(store.list()) == []


def test_failed_replace_keeps_the_old_object(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"old"), 3)
    with pytest.raises(ConnectionResetError):
        store.put(KEY, _Failing(after=1), 5)
    assert _get(store, KEY) == b"old"


def test_get_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    store.put(KEY, io.BytesIO(data), len(data))
    assert _get(store, KEY, 10, 20) == data[10:30]
    assert _get(store, KEY, 1000) == data[1000:]
    assert _get(store, KEY, 1024) == b""  # the empty range at the end
    assert _get(store, KEY, 0, 1024) == data


def test_large_objects_come_in_bounded_pieces(store: ObjectStore) -> None:
    data = bytes(range(251)) * ((3 * READ_CHUNK) // 251 + 7)
    store.put(KEY, io.BytesIO(data), len(data))
    pieces = list(store.get_range(KEY, 5, 0))
    assert all(0 < len(p) <= READ_CHUNK for p in pieces)
    assert b"".join(pieces) == data[5:]


@pytest.mark.parametrize(("offset", "length"), [(11, 0), (0, 11), (5, 6), (20, 1)])
def test_out_of_range_is_refused_before_the_first_piece(
    store: ObjectStore, offset: int, length: int
) -> None:
    store.put(KEY, io.BytesIO(b"0123456789"), 10)
    with pytest.raises(OutOfRangeError):
        store.get_range(KEY, offset, length)  # raised by the call, not by iterating


def test_missing_object(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        store.get_range(KEY)
    with pytest.raises(NotFound):
        store.size(KEY)


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"x"), 1)
    store.delete(KEY)
    store.delete(KEY)
    with pytest.raises(NotFound):
        store.size(KEY)


def test_list_by_prefix(store: ObjectStore) -> None:
    keys = ["aa/00/0001", "aa/00/0002", "aa/01/0003", "aab/00/0004", "bb/00/0005"]
    for k in keys:
        store.put(k, io.BytesIO(b"x"), 1)
    assert sorted(store.list()) == keys
    assert sorted(store.list("aa/")) == keys[:3]
    assert sorted(store.list("aa")) == keys[:4]  # a string prefix, not a directory
    assert sorted(store.list("aa/00/000")) == keys[:2]
    assert list(store.list("cc/")) == []


@pytest.mark.parametrize(
    "key", ["", "../x", "a/../b", "/abs", "a//b", "a/", "a/./b", "Upper", "a b", "a\0b", "ä"]
)
def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(UsageError):
        store.put(key, io.BytesIO(b"x"), 1)
    with pytest.raises(UsageError):
        store.get_range(key)
    with pytest.raises(UsageError):
        store.size(key)
    with pytest.raises(UsageError):
        store.delete(key)


def test_concurrent_puts(store: ObjectStore) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                key = f"user/{j % 3:02x}/{i:02x}{j:02x}"
                store.put(key, io.BytesIO(bytes([i, j]) * 100), 200)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(store.list("user/"))) == 160
    assert _get(store, "user/01/0304") == bytes([3, 4]) * 100


def test_abandoned_reads_are_harmless(store: ObjectStore) -> None:
    store.put(KEY, io.BytesIO(b"y" * (2 * READ_CHUNK)), 2 * READ_CHUNK)
    never_started = store.get_range(KEY)
    half_read = store.get_range(KEY)
    next(half_read)
    del never_started, half_read  # nothing left open (filterwarnings=error would tell)
    store.delete(KEY)
    assert list(store.list()) == []


def test_open_store_refuses_a_bad_bucket_name_clearly(tmp_path: Path) -> None:
    settings = S3Settings(
        "http://127.0.0.1:9", "b", "key", secret_key_env="ANYSYNC_TEST_NO_SUCH_VAR"
    )

    class Config:
        storage_kind = "s3"
        storage_path = "objects"
        s3 = settings

    os.environ["ANYSYNC_TEST_NO_SUCH_VAR"] = "secret"
    try:
        with pytest.raises(UsageError, match=r"\[storage\]"):
            open_store(Config(), tmp_path)
    finally:
        del os.environ["ANYSYNC_TEST_NO_SUCH_VAR"]
