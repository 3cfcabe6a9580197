"""One sync pass at a time per client home (e.g. `sync run` beside `sync run --watch`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def pass_lock(home: Path) -> Iterator[None]:
    """Held by every pass, and by anything else that writes into a sync folder (a pass
    running at the same moment could take its temp file for a local change, or delete it)."""
    fd = os.open(home / "sync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
