"""Uploads in progress on the direct path: announced by BeginUpload, not yet committed.

Kept in memory: a restart only costs the client a retry, and nothing is recorded before
CommitUpload has checked the stored object.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from anysync.errors import NotFound, RateLimited
from anysync.types import BlobLocation, PackId

MAX_PER_ACCOUNT = 64


@dataclass(frozen=True, slots=True)
class PendingUpload:
    account: int
    pack_id: PackId
    size: int
    md5: bytes
    entries: list[BlobLocation]
    expires_at: float
    # What add_pack checks at CommitUpload: the account's quota, or with the maintenance
    # headroom when BeginUpload allowed it (0 = unlimited).
    quota: int


class PendingUploads:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[int, PackId], PendingUpload] = {}

    def add(self, upload: PendingUpload) -> None:
        with self._lock:
            self._expire()
            mine = sum(1 for account, _ in self._items if account == upload.account)
            if mine >= MAX_PER_ACCOUNT:
                raise RateLimited("too many uploads in progress; finish some first")
            self._items[(upload.account, upload.pack_id)] = upload

    def take(self, account: int, pack_id: PackId) -> PendingUpload:
        with self._lock:
            self._expire()
            upload = self._items.pop((account, pack_id), None)
        if upload is None:
            raise NotFound(f"no upload of pack {pack_id} in progress (expired? begin again)")
        return upload

    def _expire(self) -> None:
        now = time.time()
        for k in [k for k, u in self._items.items() if u.expires_at < now]:
            del self._items[k]
