"""Packs: many encrypted blobs in one stored object.

A tree of 100k small files becomes a few dozen uploads instead of 100k. Pack layout,
version 1:

    blob envelopes        back to back, in random order (sizes and order reveal less)
    header envelope       kind PACK_HEADER, plaintext below; envelope version 2
                          (version 1 in packs written before it; both are read)
    header_id       32    the header's blob ID (needed for the envelope's AAD)
    header_length   u32   little-endian length of the header envelope
    magic           4     b"ASPK"
    version         1     0x01

    header plaintext = version u8 | count u32 | count × (blob ID 32 | kind u8 |
                       offset u64 | length u32)         (little-endian)

The pack's own version stays 1: envelope version 2 changed what is inside the header
envelope, not where it sits, and each envelope carries its own version.

The server keeps the blob → (pack, offset, length) index itself, so clients never read
pack headers in normal operation; the header lets `check` and a future repair rebuild
the index from the packs alone.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field

from anysync.client.repo import envelope
from anysync.errors import IntegrityError
from anysync.types import BlobId, BlobKind

MAGIC = b"ASPK"
VERSION = 1
TRAILER = struct.Struct("<32sI4sB")
_HEADER_COUNT = struct.Struct("<BI")
_HEADER_ENTRY = struct.Struct("<32sBQI")
# Packs of about 16 MiB: few enough objects for 100k files, small enough to retry.
TARGET_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PackedBlob:
    blob_id: BlobId
    kind: BlobKind
    offset: int
    length: int


@dataclass(slots=True)
class FinishedPack:
    data: bytes
    sha256: bytes
    blobs: list[PackedBlob]


@dataclass
class PackBuilder:
    """Collects sealed blobs until the pack is big enough, then lays it out."""

    data_key: bytes
    id_key: bytes
    _pending: list[tuple[BlobId, BlobKind, bytes]] = field(default_factory=list)
    _size: int = 0

    def add(self, bid: BlobId, kind: BlobKind, sealed: bytes) -> None:
        self._pending.append((bid, kind, sealed))
        self._size += len(sealed)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._pending)

    def full(self) -> bool:
        return self._size >= TARGET_SIZE

    def finish(self) -> FinishedPack:
        pending, self._pending, self._size = self._pending, [], 0
        random.SystemRandom().shuffle(pending)
        parts: list[bytes] = []
        blobs: list[PackedBlob] = []
        offset = 0
        for bid, kind, sealed in pending:
            parts.append(sealed)
            blobs.append(PackedBlob(bid, kind, offset, len(sealed)))
            offset += len(sealed)
        header = _HEADER_COUNT.pack(VERSION, len(blobs)) + b"".join(
            _HEADER_ENTRY.pack(b.blob_id.raw, b.kind, b.offset, b.length) for b in blobs
        )
        header_id = envelope.blob_id(self.id_key, header)
        sealed_header = envelope.seal(self.data_key, BlobKind.PACK_HEADER, header_id, header)
        parts.append(sealed_header)
        parts.append(TRAILER.pack(header_id.raw, len(sealed_header), MAGIC, VERSION))
        data = b"".join(parts)
        return FinishedPack(data, hashlib.sha256(data).digest(), blobs)


def read_header(data_key: bytes, id_key: bytes, pack: bytes) -> list[PackedBlob]:
    """Decode a whole pack's table of contents."""
    header_id, start, length = header_span(len(pack), pack[-TRAILER.size :])
    return open_header(data_key, id_key, header_id, pack[start : start + length], start)


def header_span(size: int, trailer: bytes) -> tuple[BlobId, int, int]:
    """(header ID, offset, length) of the sealed header of a pack of `size` bytes, from
    its last TRAILER.size bytes: what `repair index` reads without the whole pack."""
    if size < TRAILER.size or len(trailer) != TRAILER.size:
        raise IntegrityError("pack is truncated")
    header_id, header_len, magic, version = TRAILER.unpack(trailer)
    if magic != MAGIC or version != VERSION:
        raise IntegrityError("not an AnySync pack (bad trailer)")
    start = size - TRAILER.size - header_len
    if start < 0:
        raise IntegrityError("pack header length is out of range")
    return BlobId(header_id), start, header_len


def open_header(
    data_key: bytes, id_key: bytes, header_id: BlobId, sealed: bytes, data_end: int
) -> list[PackedBlob]:
    """Authenticate and decode a sealed header; its blobs must lie before `data_end`
    (where the header starts)."""
    header = envelope.open_(data_key, id_key, BlobKind.PACK_HEADER, header_id, sealed)
    if len(header) < _HEADER_COUNT.size:
        raise IntegrityError("pack header is malformed")
    version, count = _HEADER_COUNT.unpack_from(header)
    if version != VERSION or len(header) != _HEADER_COUNT.size + count * _HEADER_ENTRY.size:
        raise IntegrityError("pack header is malformed")
    blobs = []
    for i in range(count):
        raw, kind, offset, length = _HEADER_ENTRY.unpack_from(
            header, _HEADER_COUNT.size + i * _HEADER_ENTRY.size
        )
        if offset + length > data_end:
            raise IntegrityError("pack header points outside the pack")
        try:
            blobs.append(PackedBlob(BlobId(raw), BlobKind(kind), offset, length))
        except ValueError:
            raise IntegrityError("pack header names an unknown blob kind") from None
    return blobs
