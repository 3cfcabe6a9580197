"""Packs on the server side: where they are stored and how an upload is checked.

An upload is verified while it streams: PackStream hands the store the pack's bytes
but holds back the last piece until it has seen the whole stream, checked its length
and its SHA-256. A store writes to a temporary object and makes it visible only after
reading `size` bytes (ObjectStore.put), so a pack that fails a check, or a client
that goes away mid-stream, never becomes an object.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

from anysync.errors import IntegrityError, UsageError
from anysync.types import PackId

# A pack is "several MiB" (DESIGN.md §3); this only bounds what one upload may cost.
MAX_PACK_SIZE = 1 << 30


def user_prefix(server_secret: bytes, user_id: str) -> str:
    """An account's directory in the object store: not guessable from the user ID,
    so an operator browsing the store learns nothing more than the database says."""
    mac = hmac.new(server_secret, b"prefix" + user_id.encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def pack_key(server_secret: bytes, user_id: str, pack_id: PackId) -> str:
    """`<user prefix>/<first 2 hex>/<pack hex>`: 256 shards keep directories small."""
    hex_id = pack_id.hex()
    return f"{user_prefix(server_secret, user_id)}/{hex_id[:2]}/{hex_id}"


class PackStream:
    """A Readable over the data pieces of an upload that checks them on the way.

    Raises UsageError when the stream is longer or shorter than `size`, and
    IntegrityError when its SHA-256 is not `sha256`, always before the last byte is
    returned.
    """

    def __init__(self, pieces: Iterator[bytes], size: int, sha256: bytes) -> None:
        if size <= 0:  # the check runs when the last byte arrives: there must be one
            raise UsageError("a pack cannot be empty")
        self._pieces = pieces
        self._size = size
        self._expected = sha256
        self._hash = hashlib.sha256()
        self._received = 0
        self._buffer = bytearray()
        self._verified = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._verified and (size < 0 or len(self._buffer) < size):
            self._pull()
        n = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _pull(self) -> None:
        piece = next(self._pieces, None)
        if piece is None:
            raise UsageError(f"the upload ended after {self._received} of {self._size} bytes")
        self._received += len(piece)
        if self._received > self._size:
            raise UsageError(f"the upload is longer than the {self._size} bytes its header says")
        self._hash.update(piece)
        self._buffer += piece
        if self._received == self._size:
            self._verify()

    def _verify(self) -> None:
        for extra in self._pieces:  # the stream must end here
            if extra:
                raise UsageError(
                    f"the upload is longer than the {self._size} bytes its header says"
                )
        if not hmac.compare_digest(self._hash.digest(), self._expected):
            raise IntegrityError("the pack's SHA-256 does not match its header; not stored")
        self._verified = True
