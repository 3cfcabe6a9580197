"""The bounded pool where the server's blocking work runs: SQLite, the object store,
hashing and scrypt. The event loop never blocks; it awaits `run(...)`.

A fixed, small number of threads (Limits.pool_threads): work queues rather than
spawning threads, and SQLite keeps one connection per thread. A call whose RPC is
cancelled keeps running in its thread until it returns (a thread cannot be stopped), so
shutdown waits for `wait_idle` before it closes the database.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


class BlockingPool:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blocking")
        self._busy = 0
        self._idle = threading.Condition()

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """fn(*args, **kwargs) in a pool thread, awaited on the running loop."""
        future = self.submit(functools.partial(fn, *args, **kwargs))
        return await asyncio.wrap_future(future)

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        """Start fn() in a pool thread without waiting for it."""
        with self._idle:
            self._busy += 1
        return self._executor.submit(self._counted, fn)

    def _counted(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        finally:
            with self._idle:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.notify_all()

    @property
    def busy(self) -> int:
        """Calls queued or running."""
        with self._idle:
            return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is queued or running; False if some still are after `timeout`."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
