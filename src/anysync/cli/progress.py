"""Progress on a terminal: one line, rewritten in place; silent when stderr is piped."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from anysync.client.progress import human_bytes


class Progress:
    """A Reporter (anysync.client.progress) that draws on a terminal."""

    def __init__(
        self, verb: str, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.verb = verb
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.files = 0
        self.bytes = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._width = 0

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        self.files += files
        self.bytes += nbytes
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.2:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.bytes / max(now - self._start, 1e-6)
        line = f"{self.verb}: {self.files} files, {human_bytes(self.bytes)}, {human_bytes(rate)}/s"
        pad = max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
