from __future__ import annotations

import io
import random
from pathlib import Path

from anysync.client.chunker import MAX_SIZE, MIN_SIZE, WHOLE_FILE, Chunker


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def cut(chunker: Chunker, data: bytes) -> list[bytes]:
    return [bytes(c) for c in chunker.cut_stream(io.BytesIO(data))]


def test_chunks_reassemble_and_respect_bounds() -> None:
    data = _data(20 * 1024 * 1024)
    chunks = cut(Chunker(seed=42), data)
    assert b"".join(chunks) == data
    assert all(MIN_SIZE <= len(c) <= MAX_SIZE for c in chunks[:-1])
    assert 5 <= len(chunks) <= 60  # about 1 MiB average


def test_insert_at_start_changes_few_chunks() -> None:
    data = _data(16 * 1024 * 1024)
    chunker = Chunker(seed=42)
    before = set(cut(chunker, data))
    after = cut(chunker, b"X" * 1024 + data)
    changed = [c for c in after if c not in before]
    assert len(changed) <= 2
    assert len(after) > 4


def test_boundaries_depend_on_the_key() -> None:
    data = _data(16 * 1024 * 1024)
    a = [len(c) for c in cut(Chunker(seed=1), data)]
    b = [len(c) for c in cut(Chunker(seed=2), data)]
    assert a != b


def test_small_and_empty_inputs() -> None:
    assert cut(Chunker(seed=3), b"") == []
    assert cut(Chunker(seed=3), b"abc") == [b"abc"]


def test_file_chunks_cut_like_the_stream_at_every_size(tmp_path: Path) -> None:
    chunker = Chunker(seed=42)
    for size in (0, 1, MIN_SIZE, MIN_SIZE + 1, 3 * 1024 * 1024, WHOLE_FILE + 5 * 1024 * 1024):
        data = _data(size, seed=size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        with open(path, "rb", buffering=0) as f:
            pieces = list(chunker.file_chunks(f, size))
        assert pieces == cut(chunker, data)
        assert b"".join(pieces) == data


def test_file_chunks_follow_a_file_that_grew_since_its_stat(tmp_path: Path) -> None:
    chunker = Chunker(seed=1)
    data = _data(2 * 1024 * 1024)
    path = tmp_path / "grown"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        assert b"".join(chunker.file_chunks(f, 100)) == data
