"""Watch mode: react to local changes (inotify) and to ref updates pushed by the server.

Local events are debounced (a pass starts after a short quiet period, so a file being
saved in several writes is read once it is complete); a periodic full pass is the safety
net for missed events (inotify queue overflow). Remote updates arrive over the
WatchRefs stream, so a change made elsewhere reaches this device in about a second.

The watcher also keeps, per folder, the paths its events named (`take_changes`): a pass
given them reads only those (engine.run_pass `changed`), so it costs the change, not the
folder. The first pass, one after an event that cannot be placed, and one at least every
RESCAN_EVERY seconds read every path.
"""

from __future__ import annotations

import logging
import os
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
MAX_BACKOFF = 60.0  # seconds between attempts to reach a server that is down


class RefStream(Protocol):
    def __iter__(self) -> Iterator[Ref | None]: ...

    def cancel(self) -> None: ...


class RefSource(Protocol):
    """What the watcher needs from the server (anysync.client.remote.Remote provides it)."""

    def watch_refs(self, names: Sequence[str] = ()) -> RefStream: ...


class _Trigger(FileSystemEventHandler):
    def __init__(self, root: Path, wake: Callable[[Path, list[bytes] | None], None]) -> None:
        self.root = os.fsencode(root)
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = os.fsencode(event.src_path)
        if b".anysync-tmp-" in path or event.event_type in ("opened", "closed_no_write"):
            return  # our own temp files, and reads
        paths = [path, os.fsencode(event.dest_path)] if event.dest_path else [path]
        rels: list[bytes] | None = []
        for p in paths:
            if p == self.root:
                continue  # the folder's own entry: its content has events of its own
            if rels is not None and p.startswith(self.root + b"/"):
                rels.append(p[len(self.root) + 1 :])
            else:
                rels = None  # a path we cannot place: look at every path
        self.wake(Path(os.fsdecode(self.root)), rels)


class _Overflow(logging.Handler):
    """watchdog tells of an inotify queue overflow (events lost) only in its log."""

    def __init__(self, lost: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.lost = lost

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.lost()


class Watcher:
    def __init__(self, roots: list[Path], remote: RefSource, refs: list[str]) -> None:
        self._cond = threading.Condition()
        self._dirty_since: float | None = time.monotonic()  # first pass at once
        self._last_event = 0.0
        self._stop = False
        self._observer = Observer()
        # Per folder, the paths changed since its last pass; None: unknown (the first
        # pass, the periodic one, an event we could not place), so every path is read.
        self._changed: dict[Path, set[bytes] | None] = {}
        self._full_due: dict[Path, float] = {}  # when a folder's next full pass is due
        for root in roots:
            self._changed[root] = None
            self._observer.schedule(_Trigger(root, self._local), str(root), recursive=True)
        self._overflow = _Overflow(self._lost)
        self._remote = remote
        self._refs = refs
        self._stream: RefStream | None = None

    def _lost(self) -> None:
        """Events were lost: the next pass of every folder reads every path."""
        with self._cond:
            self._changed = dict.fromkeys(self._changed)
        self._wake()

    def _local(self, root: Path, paths: list[bytes] | None) -> None:
        with self._cond:
            known = self._changed.get(root)
            if paths is None or root not in self._changed:
                self._changed[root] = None
            elif known is not None:
                known.update(paths)
        self._wake()

    def take_changes(self, root: Path) -> frozenset[bytes] | None:
        """The paths of the folder `root` changed since the last call (relative), for
        its next pass (engine.run_pass's `changed`); None: read every path."""
        with self._cond:
            found = self._changed.get(root)
            self._changed[root] = set()
            now = time.monotonic()
            if self._full_due.get(root, now) <= now:  # the safety net for lost events
                found = None
            if found is None:
                self._full_due[root] = now + RESCAN_EVERY
        return None if found is None else frozenset(found)

    def _wake(self, at_once: bool = False) -> None:
        """A local event (debounced) or, with at_once, a finished remote change."""
        with self._cond:
            now = time.monotonic()
            self._last_event = now - QUIET if at_once else now
            if self._dirty_since is None:
                self._dirty_since = now
            self._cond.notify_all()

    def _listen(self) -> None:
        """Keep a WatchRefs stream open; reconnect with backoff (1 s doubling to a
        minute). Opening a stream proves nothing (gRPC connects lazily): the server's
        first message, sent at once, says it is there. One line when the stream is lost
        and one when it is back, not one per attempt."""
        delay, lost = 1.0, False
        while not self._stop:
            try:
                stream = self._remote.watch_refs(self._refs)
                self._stream = stream
                connected = False
                for ref in stream:
                    if not connected:
                        connected, delay = True, 1.0
                        if lost:
                            log.warning("the server is reachable again; syncing")
                            lost = False
                        self._wake(at_once=True)  # catch up on anything missed while away
                    if ref is not None:
                        log.info("remote change of %s", ref.name[:12])
                        self._wake(at_once=True)  # a commit is complete: no need to wait
            except AnySyncError as exc:
                if self._stop:
                    return
                if not lost:
                    log.warning(
                        "lost the server's update stream (%s); retrying, up to once a "
                        "minute, until it is back",
                        exc.message,
                    )
                    lost = True
                else:
                    log.debug("still no server (%s); next try in %.0f s", exc.message, delay)
            if not self._stop:
                self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _sleep(self, seconds: float) -> None:
        """Wait, but return at once on stop()."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop, seconds)

    def run(self, sync_pass: Callable[[], None]) -> None:
        """Run passes as events arrive, until stop() (or KeyboardInterrupt)."""
        logging.getLogger("watchdog").addHandler(self._overflow)
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
        logging.getLogger("watchdog").removeHandler(self._overflow)
        if self._stream is not None:
            self._stream.cancel()
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)
