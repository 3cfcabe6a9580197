"""Which cached chunks to drop: least recently used first, never what must stay.

A pure decision; the daemon gathers the inputs (cache entries, free space, the protected set of
pinned, dirty and open-file chunks) and removes what this returns.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

from anysync.client.drive.cache import CachedChunk
from anysync.types import BlobId


@dataclass(frozen=True)
class Budget:
    limit: int  # bytes the cache may hold
    min_free: int  # bytes to leave free on the cache's file system
    low_water: float = 0.8  # once over the limit, evict down to this share of it (no flapping)
    grace: float = 120.0  # seconds a chunk just used stays (it is likely being read right now)


def choose_victims(
    chunks: Sequence[CachedChunk],
    protected: Set[BlobId],
    usage: int,
    free: int,
    budget: Budget,
    now: float,
) -> list[BlobId]:
    """The chunks to remove, oldest use first. Empty when within budget, and also when
    everything over it is protected or in its grace period (the caller warns then)."""
    if usage <= budget.limit and free >= budget.min_free:
        return []
    target = budget.low_water * budget.limit
    victims: list[BlobId] = []
    for chunk in sorted(chunks, key=lambda c: (c.last_used, c.bid)):
        if usage <= target and free >= budget.min_free:
            break
        if chunk.bid in protected or now - chunk.last_used < budget.grace:
            continue
        victims.append(chunk.bid)
        usage -= chunk.size
        free += chunk.size
    return victims
