"""Content-defined chunking: FastCDC with a keyed gear table.

pyfastcdc is pinned because its cut points are part of the dedup format: a different
chunker would re-upload everything once. The gear table is XORed with a 64-bit seed
derived from the account's ID key, so the server cannot learn file contents by
matching chunk sizes against known files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pyfastcdc import FastCDC

# Average 1 MiB (DESIGN.md §3): big enough that a million files are not a million chunks,
# small enough that an insert at the start of a large file re-uploads about one chunk.
MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 8 * 1024 * 1024
# Files up to this size are read into memory at once and cut there.
WHOLE_FILE = 32 * 1024 * 1024


class Chunker:
    def __init__(
        self,
        seed: int,
        min_size: int = MIN_SIZE,
        avg_size: int = AVG_SIZE,
        max_size: int = MAX_SIZE,
    ) -> None:
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)

    def cut_stream(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Chunks of a stream; each view is valid only until the next one is produced."""
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data

    def file_chunks(self, f: BinaryIO, size: int) -> Iterator[bytes]:
        """The chunks of an open file whose stat said `size` bytes.

        Same cut points whichever way: a file below the minimum chunk size is one chunk;
        up to WHOLE_FILE it is read at once and cut in memory (cut_stream allocates a
        16 MiB buffer per call, which dominated backups of many small files); larger
        files stream through a bounded buffer. Reads to the real end of the file, so a
        file that grew or shrank since its stat is cut as it is now.
        """
        if size <= WHOLE_FILE:
            data = f.read()
            if len(data) <= MIN_SIZE:
                if data:
                    yield data
                return
            if len(data) <= WHOLE_FILE:
                for view in self._cdc.cut_buf(data):
                    yield bytes(view.data)
                return
            f.seek(0)  # it grew past WHOLE_FILE meanwhile: stream it
        for chunk in self._cdc.cut_stream(f):
            yield bytes(chunk.data)

    def cut_buf(self, data: bytes | memoryview) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data
