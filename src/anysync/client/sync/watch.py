"""Watch mode: react to local changes (inotify) and to ref updates pushed by the server.

Local events are debounced (a pass starts after a short quiet period, so a file being
saved in several writes is read once it is complete); a periodic full pass is the safety
net for missed events (inotify queue overflow). Remote updates arrive over the
WatchRefs stream, so a change made elsewhere reaches this device in about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from anysync.errors import AnySyncError
from anysync.types import Ref

log = logging.getLogger(__name__)

QUIET = 0.4  # seconds without events before a pass starts
MAX_DELAY = 3.0  # ...but never postpone a pass longer than this
RESCAN_EVERY = 300.0


class RefStream(Protocol):
    def __iter__(self) -> Iterator[Ref | None]: ...

    def cancel(self) -> None: ...


class RefSource(Protocol):
    """What the watcher needs from the server (anysync.client.remote.Remote provides it)."""

    def watch_refs(self, names: Sequence[str] = ()) -> RefStream: ...


class _Trigger(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = (
            event.src_path
            if isinstance(event.src_path, str)
            else event.src_path.decode(errors="replace")
        )
        if ".anysync-tmp-" in path or event.event_type in ("opened", "closed_no_write"):
            return  # our own temp files, and reads
        self.wake()


class Watcher:
    def __init__(self, roots: list[Path], remote: RefSource, refs: list[str]) -> None:
        self._cond = threading.Condition()
        self._dirty_since: float | None = time.monotonic()  # first pass at once
        self._last_event = 0.0
        self._stop = False
        self._observer = Observer()
        for root in roots:
            self._observer.schedule(_Trigger(self._wake), str(root), recursive=True)
        self._remote = remote
        self._refs = refs
        self._stream: RefStream | None = None

    def _wake(self, at_once: bool = False) -> None:
        """A local event (debounced) or, with at_once, a finished remote change."""
        with self._cond:
            now = time.monotonic()
            self._last_event = now - QUIET if at_once else now
            if self._dirty_since is None:
                self._dirty_since = now
            self._cond.notify_all()

    def _listen(self) -> None:
        """Keep a WatchRefs stream open; reconnect with backoff."""
        delay = 1.0
        while not self._stop:
            try:
                stream = self._remote.watch_refs(self._refs)
                self._stream = stream
                self._wake(at_once=True)  # catch up on anything missed while away
                delay = 1.0
                for ref in stream:
                    if ref is not None:
                        log.info("remote change of %s", ref.name[:12])
                        self._wake(at_once=True)  # a commit is complete: no need to wait
            except AnySyncError as exc:
                if self._stop:
                    return
                log.warning(
                    "lost the server's update stream (%s); retrying in %.0f s", exc.message, delay
                )
            if not self._stop:
                time.sleep(delay)
                delay = min(delay * 2, 60.0)

    def run(self, sync_pass: Callable[[], None]) -> None:
        """Run passes as events arrive, until stop() (or KeyboardInterrupt)."""
        self._observer.start()
        listener = threading.Thread(target=self._listen, name="watch-refs", daemon=True)
        listener.start()
        try:
            while True:
                with self._cond:
                    while not self._stop:
                        now = time.monotonic()
                        if self._dirty_since is not None and (
                            now - self._last_event >= QUIET or now - self._dirty_since >= MAX_DELAY
                        ):
                            break
                        timeout = RESCAN_EVERY if self._dirty_since is None else QUIET / 2
                        if not self._cond.wait(timeout) and self._dirty_since is None:
                            self._dirty_since = time.monotonic()  # periodic safety net
                    if self._stop:
                        return
                    self._dirty_since = None
                sync_pass()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop run() after the pass in progress; safe to call from any thread, twice."""
        with self._cond:
            first, self._stop = not self._stop, True
            self._cond.notify_all()
        if not first:
            return
        if self._stream is not None:
            self._stream.cancel()
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)
