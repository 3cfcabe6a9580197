"""Packs on the server side: where they are stored and how an upload is checked.

An upload is verified while it streams (PackCheck: length and SHA-256) into a temporary
file; only a complete, verified file is handed to the store (anysync.server.storage),
so a pack that fails a check, or whose client goes away mid-stream, never becomes an
object.
"""

from __future__ import annotations

import hashlib
import hmac

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


class PackCheck:
    """Checks an upload's pieces as they arrive: never more than `size` bytes, and at
    the end exactly `size` bytes whose SHA-256 is `sha256`.

    `add` raises UsageError as soon as the stream is longer than its header says;
    `finish` raises UsageError for a short stream and IntegrityError for a wrong hash.
    """

    def __init__(self, size: int, sha256: bytes) -> None:
        if size <= 0:
            raise UsageError("a pack cannot be empty")
        self.size = size
        self._expected = sha256
        self._hash = hashlib.sha256()
        self.received = 0

    def add(self, piece: bytes) -> None:
        self.received += len(piece)
        if self.received > self.size:
            raise UsageError(f"the upload is longer than the {self.size} bytes its header says")
        self._hash.update(piece)

    def finish(self) -> None:
        if self.received < self.size:
            raise UsageError(f"the upload ended after {self.received} of {self.size} bytes")
        if not hmac.compare_digest(self._hash.digest(), self._expected):
            raise IntegrityError("the pack's SHA-256 does not match its header; not stored")
