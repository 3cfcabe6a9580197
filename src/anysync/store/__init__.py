"""Object storage behind one protocol: a local directory, or any S3-compatible server."""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from anysync.errors import UsageError
from anysync.store.base import (
    READ_CHUNK,
    FileStore,
    ObjectStore,
    OutOfRangeError,
    PresigningStore,
    Readable,
    S3Settings,
    TransientStoreError,
    check_key,
)
from anysync.store.local import LocalStore
from anysync.store.retry import RetryingStore

if TYPE_CHECKING:
    from anysync.store.s3 import S3Store

__all__ = [
    "READ_CHUNK",
    "FileStore",
    "LocalStore",
    "ObjectStore",
    "OutOfRangeError",
    "PresigningStore",
    "Readable",
    "RetryingStore",
    "S3Settings",
    "S3Store",
    "TransientStoreError",
    "check_key",
    "open_store",
]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> object:
    # The S3 store pulls in the minio SDK (slow to import, memory): only when used.
    if name == "S3Store":
        from anysync.store.s3 import S3Store

        return S3Store
    raise AttributeError(name)


class StoreConfig(Protocol):
    """The [storage] part of the server's configuration."""

    @property
    def storage_kind(self) -> str: ...

    @property
    def storage_path(self) -> str: ...

    @property
    def s3(self) -> S3Settings | None: ...


def s3_secret(settings: S3Settings, home_root: Path) -> str:
    """The secret key from its file (0600) or environment variable; never from config."""
    if settings.secret_key_file:
        path = home_root / settings.secret_key_file
        try:
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by others; chmod 600 it", path)
            return path.read_text("utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read the S3 secret key file {path}: {exc.strerror}") from None
    value = os.environ.get(settings.secret_key_env, "")
    if not value:
        raise UsageError(
            f"the environment variable {settings.secret_key_env} (S3 secret key) is empty"
        )
    return value


def open_store(config: StoreConfig, home_root: Path) -> ObjectStore:
    """The store the configuration names; an S3 store is retried and its bucket ensured."""
    if config.storage_kind == "local" or config.s3 is None:
        return LocalStore(home_root / config.storage_path)
    from anysync.store.s3 import S3Store

    s3 = config.s3
    try:
        inner = S3Store(
            s3.endpoint,
            s3.bucket,
            s3.access_key,
            s3_secret(s3, home_root),
            region=s3.region,
            ca_file=str(home_root / s3.ca_file) if s3.ca_file else "",
            public_endpoint=s3.public_endpoint,
        )
        store = RetryingStore(inner, home_root / "tmp")
        store.retried(f"bucket {s3.bucket}", inner.ensure_bucket)
    except ValueError as exc:  # the SDK's checks of endpoint and bucket names
        raise UsageError(f"[storage]: {exc}") from None
    try:
        inner.abort_stale_uploads(datetime.timedelta(days=1))
    except Exception as exc:  # best effort; some S3 servers lack the call
        log.info("could not list abandoned multipart uploads: %s", exc)
    return store
