"""In-process publish/subscribe of ref updates, for the WatchRefs stream.

Subscribers wait on the event loop (an asyncio queue each); `publish` may be called from
any thread (ref updates commit in the blocking pool) and hands each update to the
subscriber's loop. A subscriber that falls `QUEUE_LIMIT` updates behind is ended rather
than allowed to grow without bound: WatchRefs is best effort, and a client re-reads its
refs after every reconnect (docs/protocol.md §7.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict

from anysync.types import Ref

QUEUE_LIMIT = 256
# What a subscription yields when it ends: the server is stopping, or it fell behind.
END = None


class Subscription:
    """One watcher's queue of updates, read on the loop that created it."""

    def __init__(self, account: int) -> None:
        self.account = account
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Ref | None] = asyncio.Queue(QUEUE_LIMIT + 1)

    async def get(self) -> Ref | None:
        """The next update, or END."""
        return await self._queue.get()

    def _deliver(self, ref: Ref | None) -> None:  # on the subscriber's loop
        if self._queue.qsize() >= QUEUE_LIMIT:
            ref = END  # too far behind: end the stream; the client reconnects and re-reads
        if not self._queue.full():
            self._queue.put_nowait(ref)

    def send(self, ref: Ref | None) -> None:
        """Hand `ref` to the subscriber from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(self._deliver, ref)


class RefNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._closed = False

    def subscribe(self, account: int) -> Subscription:
        """A new subscription of `account`'s updates; call on the event loop."""
        sub = Subscription(account)
        with self._lock:
            if self._closed:
                sub.send(END)
            self._subs[account].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.account)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.account]

    def watchers(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def publish(self, account: int, ref: Ref) -> None:
        with self._lock:
            targets = list(self._subs.get(account, ()))
        for sub in targets:
            sub.send(ref)

    def close(self) -> None:
        """End every watcher's stream (server shutdown)."""
        with self._lock:
            self._closed = True
            targets = [s for subs in self._subs.values() for s in subs]
        for sub in targets:
            sub.send(END)
