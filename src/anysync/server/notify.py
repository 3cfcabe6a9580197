"""In-process publish/subscribe of ref updates, for the WatchRefs stream."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict

from anysync.types import Ref

# None is the "server is stopping" sentinel.
Subscription = queue.Queue[Ref | None]


class RefNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._closed = False

    def subscribe(self, account: int) -> Subscription:
        q: Subscription = queue.Queue()
        with self._lock:
            if self._closed:
                q.put(None)
            self._subs[account].add(q)
        return q

    def unsubscribe(self, account: int, q: Subscription) -> None:
        with self._lock:
            self._subs[account].discard(q)
            if not self._subs[account]:
                del self._subs[account]

    def publish(self, account: int, ref: Ref) -> None:
        with self._lock:
            targets = list(self._subs.get(account, ()))
        for q in targets:
            q.put(ref)

    def close(self) -> None:
        """Wake every watcher so that its stream ends (server shutdown)."""
        with self._lock:
            self._closed = True
            targets = [q for qs in self._subs.values() for q in qs]
        for q in targets:
            q.put(None)
