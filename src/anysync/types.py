"""The vocabulary every layer speaks: IDs, object kinds and format constants.

Imports nothing else of the project.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

BLOB_ID_SIZE = 32
PACK_ID_SIZE = 16


class BlobKind(enum.IntEnum):
    """What an encrypted blob holds. Bound into the AEAD's associated data."""

    DATA = 1  # a chunk of file content
    TREE = 2  # one directory listing
    COMMIT = 3  # a snapshot / sync commit
    PACK_HEADER = 4  # the encrypted table of contents at the end of a pack


@dataclass(frozen=True, order=True, slots=True)
class BlobId:
    """Keyed BLAKE3 of a blob's plaintext: the server cannot confirm a guessed file."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != BLOB_ID_SIZE:
            raise ValueError(f"a blob ID is {BLOB_ID_SIZE} bytes, got {len(self.raw)}")

    @classmethod
    def from_hex(cls, text: str) -> BlobId:
        return cls(bytes.fromhex(text))

    def hex(self) -> str:
        return self.raw.hex()

    def short(self) -> str:
        return self.raw.hex()[:8]

    def __str__(self) -> str:
        return self.hex()


@dataclass(frozen=True, order=True, slots=True)
class PackId:
    """Random name of a stored pack, chosen by the server."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PACK_ID_SIZE:
            raise ValueError(f"a pack ID is {PACK_ID_SIZE} bytes, got {len(self.raw)}")

    @classmethod
    def random(cls) -> PackId:
        return cls(os.urandom(PACK_ID_SIZE))

    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex()


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a blob's ciphertext lies: a byte range of a pack."""

    blob_id: BlobId
    pack_id: PackId
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Ref:
    """Server-side pointer: opaque name → commit, updated only by compare-and-swap."""

    name: str
    commit_id: BlobId
    version: int
    updated_at: int = 0
    updated_by_device: int = 0


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt(password, salt, N=2**log_n, r, p)."""

    salt: bytes
    log_n: int
    r: int
    p: int


MAX_DEVICE_NAME = 64


def device_name_problem(name: str) -> str | None:
    """Why `name` cannot name a device, or None. Other devices print it: 1-64
    characters, none a control character (a terminal would obey it). The server enforces
    it; the client checks first to say so before asking."""
    if 0 < len(name) <= MAX_DEVICE_NAME and name.isprintable():
        return None
    return f"a device name has 1-{MAX_DEVICE_NAME} printable characters, not {name[:80]!r}"
