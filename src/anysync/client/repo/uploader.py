"""The repository's upload thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future


class UploadThread:
    """Runs uploads one after another on a daemon thread.

    Not a ThreadPoolExecutor: concurrent.futures joins its workers when the interpreter
    exits, so an upload blocked on a silent network would hold Ctrl-C for minutes.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[None], Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None  # started on the first upload

    def submit(self, job: Callable[[], None]) -> Future[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="upload", daemon=True)
            self._thread.start()
        done: Future[None] = Future()
        self._jobs.put((done, job))
        return done

    def shutdown(self, wait: bool) -> None:
        if self._thread is None:
            return
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            done, job = item
            if not done.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                job()
            except BaseException as exc:  # handed to the waiting caller by result()
                done.set_exception(exc)
            else:
                done.set_result(None)
