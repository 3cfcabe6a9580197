"""How backup and restore report progress: a small protocol the caller implements.

The CLI passes a terminal line (anysync.cli.progress.Progress); library callers and
tests may pass NullReporter. Keeping the terminal out of here lets the client run
without one.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """Told of each file as it is done, and once when the whole run is over."""

    def add(self, files: int = 0, nbytes: int = 0) -> None: ...

    def done(self) -> None: ...


class NullReporter:
    """Reports nothing."""

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        pass

    def done(self) -> None:
        pass


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
