"""Retries with exponential backoff and full jitter, around any ObjectStore.

Only TransientStoreError is retried; permanent errors pass through at once. A put()
source that cannot be re-read (an upload streaming in from a client) is first spooled
to a temporary file, so that every attempt sends the same bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from anysync.errors import UsageError
from anysync.store.backoff import Backoff
from anysync.store.base import (
    READ_CHUNK,
    ObjectStore,
    PresigningStore,
    Readable,
    TransientStoreError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingStore:
    def __init__(
        self,
        inner: ObjectStore,
        spool_dir: Path,
        attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.spool_dir = spool_dir
        self.backoff = Backoff(attempts, base_delay, max_delay)
        self._sleep = sleep

    def retried(self, what: str, op: Callable[[], T]) -> T:
        """Run op(), retrying transient store errors with backoff."""
        for attempt, delay in self.backoff.schedule():
            try:
                return op()
            except TransientStoreError as exc:
                if delay is None:
                    raise TransientStoreError(
                        f"{exc.message}; gave up after {attempt} attempts"
                    ) from None
                log.warning("%s: %s; retry %d in %.1f s", what, exc.message, attempt, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def put(self, key: str, source: Readable | Path, size: int) -> None:
        if isinstance(source, Path):
            self.retried(f"put {key}", lambda: self.inner.put(key, source, size))
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.spool_dir, prefix="spool-")
        spooled = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                _copy(source, f, size)
            self.retried(f"put {key}", lambda: self.inner.put(key, spooled, size))
        finally:
            spooled.unlink(missing_ok=True)

    def get_range(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        # Retry opening the read; a failure in the middle of a stream surfaces to the
        # caller, whose own retry re-requests the range.
        pieces = self.retried(f"get {key}", lambda: self.inner.get_range(key, offset, length))
        return pieces

    def size(self, key: str) -> int:
        return self.retried(f"size {key}", lambda: self.inner.size(key))

    def delete(self, key: str) -> None:
        self.retried(f"delete {key}", lambda: self.inner.delete(key))

    def stat(self, key: str) -> tuple[int, str]:
        inner = self.inner
        if not isinstance(inner, PresigningStore):
            raise TypeError(f"{inner!r} cannot stat objects")
        return self.retried(f"stat {key}", lambda: inner.stat(key))

    def presign(self, method: str, key: str, seconds: int) -> str:
        if not isinstance(self.inner, PresigningStore):
            raise TypeError(f"{self.inner!r} cannot presign")
        return self.inner.presign(method, key, seconds)

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(self.retried(f"list {prefix}", lambda: list(self.inner.list(prefix))))


def _copy(source: Readable, out: object, size: int) -> None:
    left = size
    write = out.write  # type: ignore[attr-defined]
    while left:
        piece = source.read(min(READ_CHUNK, left))
        if not piece:
            raise UsageError(f"the upload ended after {size - left} of {size} bytes")
        write(piece)
        left -= len(piece)
