"""Progress on a terminal: one line, rewritten in place; silent when stderr is piped.

With a total (the backup scans ahead, as restic does; a full restore knows its
snapshot's size) the line shows the share done and an estimate of the time left. Any
message for the user clears the line first (`clear_active`), so an error or a warning
never shares a line with a half-drawn progress line. ANYSYNC_PROGRESS=json gives
scripts and front ends JSON lines instead (JsonProgress).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from anysync.client.progress import human_bytes

_active: Progress | None = None  # the line on the terminal now, if any


def clear_active() -> None:
    """Blank the progress line before another message is written to the terminal."""
    if _active is not None:
        _active.clear()


class Progress:
    """A Reporter (anysync.client.progress) that draws on a terminal."""

    def __init__(
        self, verb: str, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        global _active
        self.verb = verb
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.files = 0
        self.bytes = 0
        self.total_files: int | None = None
        self.total_bytes: int | None = None
        self._start = time.monotonic()
        self._last = 0.0
        self._width = 0
        if self.enabled:
            _active = self

    def total(self, files: int, nbytes: int) -> None:
        """What the whole run will count (may come in while it runs)."""
        self.total_files, self.total_bytes = files, nbytes

    INTERVAL = 0.2  # seconds between two updates

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        self.files += files
        self.bytes += nbytes
        now = time.monotonic()
        if self.enabled and now - self._last >= self.INTERVAL:
            self._last = now
            self._draw(now)

    def share(self) -> float | None:
        """The part of the total done (bytes), or None without a total."""
        if self.total_files is None or self.total_bytes is None:
            return None
        return min(self.bytes / self.total_bytes, 1.0) if self.total_bytes else 1.0

    @staticmethod
    def left(elapsed: float, share: float) -> float | None:
        """Seconds to go at the rate so far; None before anything is done."""
        return elapsed * (1 - share) / share if share > 0 else None

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-6)
        rate = self.bytes / elapsed
        share = self.share()
        if share is None or self.total_bytes is None:
            return (
                f"{self.verb}: {self.files} files, {human_bytes(self.bytes)}, {human_bytes(rate)}/s"
            )
        left = self.left(elapsed, share)
        eta = "" if left is None else f", {_clock(left)} left"
        return (
            f"{self.verb}: {self.files}/{self.total_files} files, "
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)} ({share:.0%}), "
            f"{human_bytes(rate)}/s{eta}"
        )

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
            self._last = time.monotonic()  # the message just written stays readable a while

    def done(self) -> None:
        global _active
        self.clear()
        if _active is self:
            _active = None


class JsonProgress(Progress):
    """Progress for scripts and front ends (ANYSYNC_PROGRESS=json): a JSON object per
    line on stderr, at most one a second, and a last one with "done": true. Standard
    output keeps only the command's answer."""

    INTERVAL = 1.0

    def __init__(self, verb: str, stream: TextIO | None = None) -> None:
        super().__init__(verb, stream, enabled=True)
        self._last = time.monotonic() - self.INTERVAL / 2  # the first line after 0.5 s

    def _draw(self, now: float) -> None:
        self._emit(now, done=False)

    def doc(self, now: float, done: bool) -> dict[str, object]:
        elapsed = max(now - self._start, 1e-6)
        out: dict[str, object] = {
            "progress": self.verb,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(elapsed, 1),
        }
        share = self.share()
        if share is not None:
            out |= {
                "total_files": self.total_files,
                "total_bytes": self.total_bytes,
                "percent": round(100 * share, 1),
            }
            left = self.left(elapsed, share)
            if left is not None and share < 1 and not done:
                out["seconds_left"] = round(left, 1)
        if done:
            out["done"] = True
        return out

    def _emit(self, now: float, done: bool) -> None:
        self.stream.write(json.dumps(self.doc(now, done), separators=(",", ":")) + "\n")
        self.stream.flush()

    def clear(self) -> None:
        pass  # lines, not a line redrawn in place: nothing to blank

    def done(self) -> None:
        self._emit(time.monotonic(), done=True)
        super().done()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"
