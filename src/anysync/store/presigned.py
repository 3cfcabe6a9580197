"""Presigned HTTP requests to an object store, which Ctrl-C can end at once.

The client moves packs to and from an S3 store directly through URLs the server signs.
A request is retried with backoff on transient failures; abort() (the owner sets the
shared `aborted` event first) shuts down the sockets in flight and cuts backoff sleeps
short, so that no thread stays blocked on a silent network.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import urllib.parse

from anysync.errors import AnySyncError
from anysync.store.backoff import Backoff

log = logging.getLogger(__name__)


class Interrupted(AnySyncError):
    """A call after (or cut short by) abort(), i.e. Ctrl-C."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted")


class DirectFailed(Exception):
    """A presigned transfer failed even after retries."""


class PresignedHttp:
    """Presigned requests to the object store, with backoff; abort() ends them at once."""

    def __init__(self, aborted: threading.Event, attempts: int, timeout: float) -> None:
        self._aborted = aborted
        self._backoff = Backoff(attempts, base_delay=0.5, max_delay=4.0)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def abort(self) -> None:
        """Shut down the sockets in flight (the caller has set `aborted` first)."""
        with self._lock:
            connections = list(self._open)
        for conn in connections:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def request(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One presigned request, retried with backoff and jitter on transient failures."""
        all_headers = {"Content-Type": "application/octet-stream", **(headers or {})}
        for attempt, delay in self._backoff.schedule():
            try:
                return self._once(method, url, data, all_headers)
            except _HttpStatus as exc:
                if exc.status < 500 and exc.status != 429:
                    raise DirectFailed(
                        f"{method} refused by the object store: HTTP {exc.status}"
                    ) from None
                problem = f"HTTP {exc.status}"
            except (OSError, http.client.HTTPException) as exc:
                if self._aborted.is_set():
                    raise Interrupted() from None
                problem = str(exc) or type(exc).__name__
            if delay is None:
                raise DirectFailed(f"{problem}, after {attempt} attempts")
            log.info(
                "object store %s failed (%s); retry %d in %.1f s", method, problem, attempt, delay
            )
            if self._aborted.wait(delay):
                raise Interrupted()
        raise AssertionError("unreachable")

    def _once(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> bytes:
        parts = urllib.parse.urlsplit(url)
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(parts.hostname or "", parts.port, timeout=self._timeout)
        try:
            conn.connect()
            # Registered only once connected, and after a last look at the flag: abort()
            # sets the flag before it takes the lock, so no socket escapes it.
            with self._lock:
                if self._aborted.is_set():
                    raise Interrupted()
                self._open.add(conn)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path or "/", body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if not 200 <= resp.status < 300:
                raise _HttpStatus(resp.status)
            return body
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
