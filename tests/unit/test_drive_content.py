"""Offset → chunk mapping and on-demand fetching of the drive's content reader, over a
real chunk cache; the repository is a counting stand-in (the integration tests use the
real one)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from anysync.client.drive.cache import ChunkCache
from anysync.client.drive.content import Content
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.types import BlobId, BlobKind

CHUNKS = {BlobId(bytes([n]) * 32): os.urandom(size) for n, size in enumerate((100, 7, 250, 1))}
DATA = b"".join(CHUNKS.values())


class Repo:
    def __init__(self) -> None:
        self.asked: list[list[BlobId]] = []

    def blob_id(self, data: bytes) -> BlobId:
        return next((i for i, c in CHUNKS.items() if c == data), BlobId(bytes(32)))

    def load_many(self, kind: BlobKind, ids: Sequence[BlobId]) -> dict[BlobId, Any]:
        self.asked.append(list(ids))
        return {i: CHUNKS[i] for i in ids}


def entry(with_sizes: bool) -> TreeEntry:
    sizes = tuple(len(c) for c in CHUNKS.values()) if with_sizes else ()
    return TreeEntry(
        b"f", EntryType.FILE, 0o644, 0, len(DATA), chunks=tuple(CHUNKS), chunk_sizes=sizes
    )


def reader(tmp_path: Path) -> tuple[Content, Repo]:
    repo = Repo()
    return Content(repo, ChunkCache(tmp_path / "chunks")), repo  # type: ignore[arg-type]


def test_every_range_reads_exactly_and_fetches_only_its_chunks(tmp_path: Path) -> None:
    content, repo = reader(tmp_path)
    e = entry(with_sizes=True)

    async def main() -> None:
        assert await content.read(e, 101, 5) == DATA[101:106]  # inside chunk 1 only
        assert repo.asked == [[list(CHUNKS)[1]]]
        for off, n in ((0, 358), (99, 3), (106, 3), (350, 100), (357, 1), (358, 10)):
            assert await content.read(e, off, n) == DATA[off : off + n]
        asked = [c for ask in repo.asked for c in ask]
        assert len(asked) == len(set(asked))  # each chunk fetched once

    trio.run(main)


def test_a_tree_without_chunk_sizes_fetches_in_order_until_known(tmp_path: Path) -> None:
    content, repo = reader(tmp_path)
    e = entry(with_sizes=False)

    async def main() -> None:
        assert await content.read(e, 300, 20) == DATA[300:320]
        assert await content.read(e, 0, 358) == DATA

    trio.run(main)
    assert sorted([c for ask in repo.asked for c in ask]) == sorted(CHUNKS)  # still once each


def test_concurrent_readers_share_one_fetch(tmp_path: Path) -> None:
    content, repo = reader(tmp_path)
    e = entry(with_sizes=True)
    results: list[bytes] = []

    async def read() -> None:
        results.append(await content.read(e, 0, len(DATA)))

    async def main() -> None:
        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(read)

    trio.run(main)
    assert results == [DATA] * 5
    assert sorted([c for ask in repo.asked for c in ask]) == sorted(CHUNKS)


def test_a_chunk_torn_by_a_crash_is_fetched_again(tmp_path: Path) -> None:
    first = list(CHUNKS)[2]
    earlier = ChunkCache(tmp_path / "chunks", durable=False)  # a run that crashed
    earlier.put(first, bytes(len(CHUNKS[first])))  # the right size, zeros inside
    content, repo = reader(tmp_path)
    e = entry(with_sizes=True)
    assert content.cache.has(first)

    async def main() -> None:
        assert await content.read(e, 107, 250) == CHUNKS[first]
        assert await content.read(e, 107, 250) == CHUNKS[first]

    trio.run(main)
    assert repo.asked == [[first]]  # checked once, fetched again once
