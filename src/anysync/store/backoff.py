"""Exponential backoff with full jitter: the one retry schedule of the store and of
the client's presigned transfers.

Full jitter (a delay drawn uniformly below a doubling, capped bound) keeps many
clients that failed together from retrying together.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    attempts: int
    base_delay: float
    max_delay: float

    def schedule(self) -> Iterator[tuple[int, float | None]]:
        """(attempt number, delay before the next attempt) for each attempt; the last
        attempt's delay is None: after it the caller gives up."""
        for attempt in range(1, self.attempts):
            yield attempt, random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311
        yield self.attempts, None
