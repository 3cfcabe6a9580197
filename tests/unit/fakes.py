"""In-memory doubles for unit tests of the repository layer (no server, no disk)."""

from __future__ import annotations

from collections.abc import Sequence

from anysync.client.keys import MasterKeys
from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.repository import PACK_LIVE, PackInfo, PackListing
from anysync.errors import ClientTooOld, Conflict, GcRaced, NotFound
from anysync.types import BlobId, BlobLocation, PackId, Ref

KEYS = MasterKeys.generate()

# A fixed conflict time, 2025-12-29 15:50:56 UTC, and the tag it gives device "pc".
WHEN = 1_767_023_456.7
TAG = b" (conflict from pc 2025-12-29 155056)"


class MemoryRemote:
    """An honest server in memory: what a Repository needs, and nothing else."""

    def __init__(self) -> None:
        self.packs: dict[PackId, bytes] = {}
        self.index: dict[BlobId, BlobLocation] = {}
        self.refs: dict[str, Ref] = {}
        self.conflicts_left = 0  # update_ref calls that lose a race first
        self.update_calls = 0
        self.gc_generation = 0  # +1 per condemn()
        self.maintenance_packs: list[PackId] = []

    def find_blobs_at(self, ids: Sequence[BlobId]) -> tuple[dict[BlobId, BlobLocation], int]:
        return {i: self.index[i] for i in ids if i in self.index}, self.gc_generation

    def upload_pack(
        self,
        data: bytes,
        sha256: bytes,
        entries: Sequence[PackedBlob],
        maintenance: bool = False,
    ) -> PackId:
        pack_id = PackId.random()
        if maintenance:
            self.maintenance_packs.append(pack_id)
        self.packs[pack_id] = data
        for e in entries:
            self.index[e.blob_id] = BlobLocation(e.blob_id, pack_id, e.offset, e.length)
        return pack_id

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes:
        if pack_id not in self.packs:
            raise NotFound(f"pack {pack_id.hex()[:8]} is missing or damaged on the server")
        data = self.packs[pack_id]
        return data[offset : offset + length] if length else data[offset:]

    def list_refs(self, prefix: str = "") -> list[Ref]:
        return [r for n, r in sorted(self.refs.items()) if n.startswith(prefix)]

    def get_ref(self, name: str) -> Ref | None:
        return self.refs.get(name)

    def update_ref(
        self,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        gc_generation: int | None = None,
    ) -> Ref:
        self.update_calls += 1
        if self.conflicts_left:
            self.conflicts_left -= 1
            raise Conflict("ref changed concurrently")
        current = self.refs.get(name)
        version = current.version if current else 0
        if version != expected_version:
            raise Conflict(f"ref changed concurrently (now at version {version})")
        if gc_generation is None and self.gc_generation > 0:
            raise ClientTooOld()
        if gc_generation is not None and gc_generation != self.gc_generation:
            raise GcRaced("packs were condemned since this session looked")
        if commit_id not in self.index:
            raise AssertionError("the client moved a ref before storing its commit")
        ref = Ref(name, commit_id, version + 1)
        self.refs[name] = ref
        return ref

    def list_packs(self, include_entries: bool, include_condemned: bool = False) -> PackListing:
        by_pack: dict[PackId, list[BlobLocation]] = {p: [] for p in self.packs}
        for loc in self.index.values():
            by_pack.setdefault(loc.pack_id, []).append(loc)
        packs = [
            PackInfo(
                pack_id=p,
                size=len(self.packs.get(p, b"")),
                charged=len(self.packs.get(p, b"")),
                created_at=0,
                state=PACK_LIVE,
                condemned_at=0,
                entries=tuple(locs) if include_entries else (),
            )
            for p, locs in by_pack.items()
        ]
        return PackListing(self.gc_generation, len(self.refs), packs)

    def condemn(self, pack_ids: Sequence[PackId]) -> None:
        """What a prune does at grace 0: the packs and their locations are gone."""
        for pack_id in pack_ids:
            del self.packs[pack_id]
        self.index = {b: loc for b, loc in self.index.items() if loc.pack_id not in pack_ids}
        self.gc_generation += 1

    def force(self, name: str, commit_id: BlobId) -> None:
        """What a malicious server does: point a ref anywhere."""
        current = self.refs.get(name)
        self.refs[name] = Ref(name, commit_id, (current.version if current else 0) + 1)
