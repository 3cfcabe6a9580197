"""Caps on what callers may hold open: streams per address, per account and in all,
and uploads in progress. What a client sends must not decide what the server spends.

Every streaming call (WatchRefs, UploadPack, ReadPack, Health/Watch) takes a place for
its client address when it starts, and one for its account once it is authenticated;
both are given back when the call ends, however it ends. A call over a cap is refused at
once with TooManyStreams (RESOURCE_EXHAUSTED, reason "too_many_streams"). Each piece of
an upload takes one of `max_uploads` slots while it is written, so that disk bandwidth
and pool time are bounded by configuration and a stalled upload holds no slot; a piece
waits up to `upload_wait_seconds` for one, then the upload is refused the same way.

Unary calls hold no place: they are answered, and their blocking work queues for the
bounded pool (anysync.server.pool). The heavy ones run a few at a time and wait on the
loop, not in a pool thread: FindBlobs `heavy_calls` at a time, so that their objects do
not pile up in memory, and the calls that hash a login secret `login_calls` at a time
(scrypt takes 16 MiB), so that a burst of logins neither grows memory nor fills the
pool that every other call needs.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from anysync.errors import TooManyStreams

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's caps and deadlines. Defaults suit a small home server; tests and
    `app.start(..., limits=)` may pass others."""

    pool_threads: int = 8  # blocking work: SQLite, the object store, hashing, scrypt
    streams_per_address: int = 64  # NAT: a household's devices share one address
    streams_per_account: int = 32  # a device holds one WatchRefs plus its transfers
    streams_total: int = 1024
    max_uploads: int = 4  # UploadPack pieces written at once, server-wide
    upload_wait_seconds: float = 60.0  # how long an upload waits for a slot
    upload_idle_seconds: float = 30.0  # an upload without data for this long is cut off
    heavy_calls: int = 2  # FindBlobs calls at once (10,000 IDs in, locations out)
    login_calls: int = 2  # Signup, Login, ChangePassword at once (scrypt: 16 MiB each)

    @classmethod
    def from_env(cls) -> Limits:
        """Defaults, with the upload idle deadline overridable for tests of real processes
        (ANYSYNC_TESTONLY_UPLOAD_IDLE_SECONDS)."""
        idle = os.environ.get("ANYSYNC_TESTONLY_UPLOAD_IDLE_SECONDS")
        return cls(upload_idle_seconds=float(idle)) if idle else cls()


class StreamGate:
    """Counts open streams per client address, per account and in all."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._by_address: dict[str, int] = {}
        self._by_account: dict[int, int] = {}
        self._total = 0

    @property
    def open_streams(self) -> int:
        with self._lock:
            return self._total

    def hold_address(self, address: str) -> Place:
        """A place for a stream from `address` (and in the total), released by the
        returned Place (a context manager); TooManyStreams when there is none."""
        with self._lock:
            if self._total >= self.limits.streams_total:
                raise TooManyStreams("the server has too many open streams; try again later")
            held = self._by_address.get(address, 0)
            if held >= self.limits.streams_per_address:
                raise TooManyStreams(
                    f"too many open streams from your address (at most "
                    f"{self.limits.streams_per_address}); close some first"
                )
            self._by_address[address] = held + 1
            self._total += 1
        return Place(lambda: self._release_address(address))

    def hold_account(self, account: int) -> Place:
        """A place for a stream of `account`, as hold_address."""
        with self._lock:
            held = self._by_account.get(account, 0)
            if held >= self.limits.streams_per_account:
                raise TooManyStreams(
                    f"too many open streams for this account (at most "
                    f"{self.limits.streams_per_account}); close some first"
                )
            self._by_account[account] = held + 1
        return Place(lambda: self._release_account(account))

    def _release_address(self, address: str) -> None:
        with self._lock:
            self._total -= 1
            _release(self._by_address, address)

    def _release_account(self, account: int) -> None:
        with self._lock:
            _release(self._by_account, account)


class Place:
    """A held place; given back once, on leaving the `with` block or by `release`."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _release(counts: dict[_K, int], key: _K) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class UploadSlots:
    """At most `limits.max_uploads` upload pieces are written at once; on the event loop.
    A slot is taken per piece (UploadPack) so that a stalled stream holds none."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._free = asyncio.Semaphore(limits.max_uploads)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._free.acquire(), self.limits.upload_wait_seconds)
        except TimeoutError:
            raise TooManyStreams("the server is busy with other uploads; try again later") from None
        try:
            yield
        finally:
            self._free.release()
