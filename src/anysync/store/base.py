"""The ObjectStore protocol: where packs live, and the contract every backend keeps.

Keys are chosen by the server, never by a client: `<user prefix>/<aa>/<pack id hex>`.
They are plain strings of [0-9a-z_-] components joined by "/", so that one key maps to
one file name, one S3 object name, one URL path, with no escaping anywhere.

Cross-cutting concerns (retries, rate limits, fault injection in tests) belong in
wrappers that implement this same protocol, not in the backends.

Stores that can hand out presigned URLs (S3) also implement PresigningStore, so that
clients move the bytes to and from the object store directly; the local store streams
through gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from anysync.errors import AnySyncError, UsageError

# Largest piece get_range yields; also the largest gRPC data message the server sends.
READ_CHUNK = 1 << 20

_KEY = re.compile(r"[0-9a-z_-]+(/[0-9a-z_-]+)*")
_MAX_KEY_LENGTH = 512


class TransientStoreError(AnySyncError):
    """The object store failed in a way that may pass: retry with backoff."""


@dataclass(frozen=True, slots=True)
class S3Settings:
    """[storage] settings of an S3 store (server.toml)."""

    endpoint: str
    bucket: str
    access_key: str
    region: str = "us-east-1"
    secret_key_file: str = ""
    secret_key_env: str = ""
    ca_file: str = ""
    direct: bool = True  # clients use presigned URLs
    public_endpoint: str = ""
    presign_seconds: int = 900


class OutOfRangeError(UsageError):
    """A byte range that does not lie inside the object."""


class Readable(Protocol):
    """What put() reads from: any object with read(n), such as an open binary file."""

    def read(self, size: int = -1, /) -> bytes: ...


def check_key(key: str) -> str:
    """Return `key` if it is a valid store key, else raise UsageError.

    The charset alone rules out "..", ".", absolute paths, empty components and
    anything a file system or URL would interpret.
    """
    if len(key) > _MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise UsageError(f"invalid object key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A list() prefix: empty, or a key, optionally ending in "/"."""
    if prefix and not _KEY.fullmatch(prefix.removesuffix("/")):
        raise UsageError(f"invalid object key prefix {prefix!r}")
    return prefix


class ObjectStore(Protocol):
    """Durable storage of immutable objects under server-chosen keys.

    Every method validates its key (check_key) and raises UsageError for a bad one.
    Implementations must be safe to call from many threads at once.
    """

    def put(self, key: str, source: Readable | Path, size: int) -> None:
        """Store exactly `size` bytes read from `source` under `key`.

        Atomic: readers see either no object or the whole object, never a part of it,
        even after a crash (temp file, fsync, rename, fsync of the directory, or the
        backend's equivalent). When `source` raises, or ends before `size` bytes,
        the exception propagates (a short source raises UsageError), nothing is left
        under `key` and any temporary data is removed. Bytes of `source` beyond `size`
        are not read.

        Idempotent: putting the same bytes under the same key again succeeds, so a
        caller may retry. Putting different bytes replaces the object atomically; the
        server never does that, because it chooses fresh random keys.

        Returns only after the object is durable.
        """
        ...

    def get_range(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """The bytes [offset, offset + length) of the object, in pieces of at most
        READ_CHUNK bytes. `length` 0 means "to the end".

        Raises NotFound when there is no object under `key`, and OutOfRangeError when the
        range does not lie inside the object: from the call itself, not from the
        iteration (only an object deleted after the call is reported by iterating).
        """
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes. Raises NotFound when there is no such object."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object. Idempotent: deleting a missing object succeeds."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with `prefix` (a plain string prefix), in no
        particular order. Objects being written (not yet renamed into place) are
        never listed.
        """
        ...


@runtime_checkable
class PresigningStore(Protocol):
    """A store whose objects clients can reach directly (S3)."""

    def presign(self, method: str, key: str, seconds: int) -> str:
        """A URL that allows `method` ("GET" or "PUT") on `key` for `seconds`, and
        nothing else: no other key, no other method, no listing."""
        ...

    def stat(self, key: str) -> tuple[int, str]:
        """(size, ETag) of the object; for a single-part upload the ETag is its MD5 in
        hex. Raises NotFound when there is no such object."""
        ...


@runtime_checkable
class FileStore(Protocol):
    """A store that keeps objects as files (LocalStore). An upload streaming in from a
    client is written straight into the store's temporary area and then adopted, instead
    of being written once to a spool file and copied again by put()."""

    def temp_path(self) -> Path:
        """A fresh path in the store's temporary area, on the objects' file system. The
        caller writes the object there, then adopts it, or removes it."""
        ...

    def adopt(self, key: str, path: Path, size: int) -> None:
        """Make the file at `path` (from temp_path, exactly `size` bytes) the object under
        `key`: atomic and durable as put(). The file is moved, not copied; on failure it
        is removed."""
        ...
