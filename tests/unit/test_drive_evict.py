"""The evictor's decision: least recently used first, never a protected or just-used chunk,
down to the low-water mark, and nothing at all while the cache is within its budget."""

from __future__ import annotations

from anysync.client.drive.cache import CachedChunk
from anysync.client.drive.evict import Budget, choose_victims
from anysync.types import BlobId

NOW = 1_000_000.0
OLD = NOW - 3600  # well past the grace period
MIB = 1 << 20


def bid(n: int) -> BlobId:
    return BlobId(bytes([n]) * 32)


def chunk(n: int, size: int = MIB, last_used: float = OLD) -> CachedChunk:
    return CachedChunk(bid(n), size, last_used)


def choose(
    chunks: list[CachedChunk],
    *,
    protected: frozenset[BlobId] = frozenset(),
    free: int = 100 * MIB,
    budget: Budget | None = None,
) -> list[BlobId]:
    usage = sum(c.size for c in chunks)
    budget = budget or Budget(limit=5 * MIB, min_free=10 * MIB)
    return choose_victims(chunks, protected, usage, free, budget, NOW)


def test_nothing_is_evicted_within_the_budget() -> None:
    chunks = [chunk(n) for n in range(5)]  # exactly at the limit, plenty free
    assert choose(chunks) == []


def test_least_recently_used_go_first_down_to_the_low_water_mark() -> None:
    # 8 MiB against a 5 MiB limit: down to 4 MiB (0.8 * 5), so the 4 oldest go.
    chunks = [chunk(n, last_used=OLD + 10 * (n * 5 % 8)) for n in range(8)]  # shuffled ages
    oldest_first = [c.bid for c in sorted(chunks, key=lambda c: c.last_used)]
    assert choose(chunks) == oldest_first[:4]


def test_eviction_stops_as_soon_as_the_low_water_mark_is_reached() -> None:
    chunks = [chunk(1, size=3 * MIB, last_used=OLD), chunk(2, last_used=OLD + 1)]
    chunks += [chunk(3, size=2 * MIB, last_used=OLD + 2)]
    # 6 MiB; dropping the oldest (3 MiB) leaves 3 MiB <= 4 MiB: the others stay.
    assert choose(chunks) == [bid(1)]


def test_protected_chunks_are_never_chosen() -> None:
    chunks = [chunk(n, last_used=OLD + n) for n in range(8)]
    protected = frozenset({bid(0), bid(2)})
    assert choose(chunks, protected=protected) == [bid(1), bid(3), bid(4), bid(5)]


def test_a_chunk_shared_by_a_pinned_and_an_unpinned_file_stays() -> None:
    # The caller puts every chunk of a pinned file in `protected`, even when an
    # unpinned file refers to it too.
    shared, unpinned_only = chunk(1, size=4 * MIB), chunk(2, size=4 * MIB, last_used=OLD + 1)
    assert choose([shared, unpinned_only], protected=frozenset({bid(1)})) == [bid(2)]


def test_chunks_used_within_the_grace_period_are_never_chosen() -> None:
    recent = [chunk(n, last_used=NOW - 5) for n in range(6)]
    old = chunk(9, last_used=OLD)
    assert choose([*recent, old]) == [bid(9)]  # still over the limit, but that is all it may drop


def test_low_free_space_alone_triggers_eviction() -> None:
    # 2 MiB cached, far below the 5 MiB limit, but only 9 MiB free of the 10 wanted.
    chunks = [chunk(1, last_used=OLD), chunk(2, last_used=OLD + 1)]
    assert choose(chunks, free=9 * MIB) == [bid(1)]
    assert choose(chunks, free=8 * MIB + 1) == [bid(1), bid(2)]


def test_everything_protected_gives_nothing_to_evict() -> None:
    chunks = [chunk(n) for n in range(8)]
    assert choose(chunks, protected=frozenset(c.bid for c in chunks)) == []
