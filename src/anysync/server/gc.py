"""The reaper: deletes condemned packs once their grace period is over
(docs/prune-design.md §4).

Three steps, each safe to stop after: (1) one transaction moves the due packs to state
reaping; (2) their objects are deleted from the store (idempotent); (3) one transaction
per pack drops its index rows and its row, and takes its charge off condemned_bytes. A
crash leaves packs in state reaping, and every run finishes those first, the run at
start-up included. Nothing here touches a live pack.

Runs every `[gc] reap_every`, at start-up, and right after a CondemnPacks when the grace
period is 0. Blocks (SQLite, the object store): call it from a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from anysync.server import packs
from anysync.server.metadata import Metadata
from anysync.store import ObjectStore

log = logging.getLogger(__name__)


class ReapCounter(Protocol):
    """Where deleted charges are reported (the metrics endpoint counts them)."""

    def add_reaped(self, charged: int) -> None: ...


class _NoCounter:
    def add_reaped(self, charged: int) -> None:
        pass


class Reaper:
    def __init__(
        self,
        db: Metadata,
        store: ObjectStore,
        server_secret: bytes,
        grace_seconds: int,
        counter: ReapCounter | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.secret = server_secret
        self.grace_seconds = grace_seconds
        self.counter: ReapCounter = counter or _NoCounter()
        # One run at a time: the periodic run and one after a CondemnPacks may overlap.
        self._running = threading.Lock()

    def run(self, now: float | None = None) -> int:
        """Delete every pack condemned at least the grace period ago, and finish what
        an earlier run left; the number of packs deleted."""
        with self._running:
            due_before = int(time.time() if now is None else now) - self.grace_seconds
            self.db.start_reaping(due_before)  # step 1
            reaped = 0
            for pack in self.db.reaping():
                key = packs.pack_key(self.secret, pack.user_id, pack.pack_id)
                self.store.delete(key)  # step 2: a missing object is fine
                if self.db.finish_reaping(pack):  # step 3
                    self.counter.add_reaped(pack.charged)
                    reaped += 1
                    log.info("account %s: condemned pack %s deleted", pack.user_id, pack.pack_id)
            return reaped

    def run_logged(self) -> None:
        """`run` for a background thread: a failure is logged, and the next run retries."""
        try:
            self.run()
        except Exception:
            log.exception("deleting condemned packs failed; will retry")


class ReaperThread:
    """Runs the reaper every `every` seconds, until closed (app.start runs it once
    before serving)."""

    def __init__(self, reaper: Reaper, every: float) -> None:
        self._reaper = reaper
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._reaper.run_logged()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
