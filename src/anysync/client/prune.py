"""`anysync prune`: condemn the packs no ref needs, and repack the emptiest ones.

docs/prune-design.md §6. The decisions are prune_plan.py's; this module talks to the
server. The fences make it safe next to running backups and syncs: CondemnPacks names
the gc_generation and ref_seq the plan was made at, and the server refuses it if either
moved. On RefsChanged the new ref versions are marked and the call is retried; on
GcRaced (another prune) everything is listed again. Nothing is condemned before every
commit and tree the roots reach has been read.

Repacking copies the sealed envelopes unchanged (their AAD binds the blob ID, not the
pack) into new packs, uploads them as maintenance, and only then condemns the old packs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from anysync.client.prune_plan import (
    HistoryRow,
    Inventory,
    ListedPack,
    Marker,
    MaxUnused,
    Plan,
    batches,
    newest_heads,
    plan,
)
from anysync.client.repo import envelope
from anysync.client.repo import tree as tree_codec
from anysync.client.repo.pack import PackBuilder, PackedBlob
from anysync.client.repo.repository import Repository
from anysync.errors import AnySyncError, Conflict, GcRaced, IntegrityError, RefsChanged
from anysync.types import BlobId, BlobKind, BlobLocation, PackId, Ref

log = logging.getLogger(__name__)

ATTEMPTS = 8  # refused condemnations (the account changed) before giving up
BATCH_BYTES = 256 * 1024 * 1024  # packs repacked, then condemned, together
CONDEMN_CALL = 100_000  # pack IDs per CondemnPacks (the server's limit)
TREE_BATCH = 2_000
READ_GAP = 256 * 1024  # ranges of one pack closer than this are read together


# ---------------------------------------------------------------- what the server offers


class Listing(Protocol):
    @property
    def gc_generation(self) -> int: ...
    @property
    def ref_seq(self) -> int: ...
    @property
    def packs(self) -> Sequence[ListedPack]: ...


class Condemned(Protocol):
    @property
    def gc_generation(self) -> int: ...
    @property
    def condemned(self) -> int: ...
    @property
    def skipped_young(self) -> int: ...
    @property
    def condemned_bytes(self) -> int: ...
    @property
    def reap_at(self) -> int: ...


class VersionRow(HistoryRow, Protocol):
    @property
    def seq(self) -> int: ...


class PruneServer(Protocol):
    """The calls prune makes (anysync.client.remote.Remote implements them)."""

    def list_packs(self, include_entries: bool, include_condemned: bool = False) -> Listing: ...

    def list_refs_at(self, prefix: str = "") -> tuple[list[Ref], int]: ...

    def list_ref_history(
        self, name: str = "", after_seq: int = 0
    ) -> tuple[Sequence[VersionRow], int]: ...

    def condemn_packs(
        self, pack_ids: Sequence[PackId], expected_generation: int, expected_ref_seq: int
    ) -> Condemned: ...

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes: ...

    def upload_pack(
        self,
        data: bytes,
        sha256: bytes,
        entries: Sequence[PackedBlob],
        maintenance: bool = False,
    ) -> PackId: ...


# ---------------------------------------------------------------- result


@dataclass
class PruneResult:
    dry_run: bool
    plan: Plan | None = None
    condemned_packs: int = 0
    condemned_bytes: int = 0  # quota charge the server moved out (CondemnPacks)
    skipped_young: int = 0
    repacked_packs: int = 0
    uploaded_packs: int = 0
    uploaded_bytes: int = 0
    reap_at: int = 0  # when the last condemned packs are deleted (unix s)
    rewinds: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # bad blobs, unreadable packs

    @property
    def freed_bytes(self) -> int:
        return self.condemned_bytes - self.uploaded_bytes


class _Restart(Exception):
    """Another prune condemned packs meanwhile: list everything again."""


@dataclass
class _Fence:
    generation: int
    ref_seq: int


@dataclass
class _NewPack:
    """A pack this run uploaded, as the inventory sees it."""

    pack_id: PackId
    size: int
    created_at: int
    entries: tuple[BlobLocation, ...]


class Pruner:
    def __init__(
        self,
        server: PruneServer,
        repo: Repository,
        *,
        max_unused: MaxUnused,
        min_pack_age: int,
        batch_bytes: int = BATCH_BYTES,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] = log.info,
    ) -> None:
        self.server = server
        self.repo = repo
        self.max_unused = max_unused
        self.min_pack_age = min_pack_age
        self.batch_bytes = batch_bytes
        self.clock = clock
        self.say = say
        # Kept across restarts: marks only grow, and commits and trees are read once.
        self.marker = Marker(repo.load_commit, self._load_trees)
        self._attempts = 0

    def run(self, dry_run: bool = False) -> PruneResult:
        result = PruneResult(dry_run)
        while True:
            try:
                self._once(result)
            except _Restart:
                continue
            result.rewinds = list(self.marker.rewinds.values())
            return result

    def _attempt(self) -> None:
        self._attempts += 1
        if self._attempts >= ATTEMPTS:
            raise Conflict("the account kept changing during the prune; try again")

    def _once(self, result: PruneResult) -> None:
        listing = self.server.list_packs(include_entries=True)
        fence = _Fence(listing.gc_generation, listing.ref_seq)
        refs, seq = self.server.list_refs_at()
        if seq != fence.ref_seq:
            self._attempt()  # a ref moved between the two calls
            raise _Restart()
        rows, _ = self.server.list_ref_history()
        self.say(f"marking what {len(refs)} refs and {len(rows)} ref versions reach")
        self.marker.add({r.name: r.commit_id for r in refs}, rows)
        inv = Inventory.of(listing.packs)
        made = plan(
            inv,
            self.marker.marked,
            self.max_unused,
            now=int(self.clock()),
            min_pack_age=self.min_pack_age,
        )
        result.plan = made
        if result.dry_run:
            return
        if made.dead:
            self.say(f"condemning {len(made.dead)} packs that no ref needs")
            self._condemn(inv, made.dead, fence, result)
        for batch in batches(made.repack, inv, self.batch_bytes):
            self.say(f"repacking {len(batch)} packs")
            self._repack(inv, batch, fence, result)

    # ---------------------------------------------------------------- condemn

    def _condemn(
        self, inv: Inventory, candidates: Sequence[PackId], fence: _Fence, result: PruneResult
    ) -> list[PackId]:
        """Condemn what of `candidates` is safe to, retrying while refs move; the packs
        condemned. GcRaced restarts the whole run."""
        while True:
            ok = inv.condemnable(candidates, self.marker.marked)
            if not ok:
                return []
            try:
                for start in range(0, len(ok), CONDEMN_CALL):
                    part = ok[start : start + CONDEMN_CALL]
                    res = self.server.condemn_packs(part, fence.generation, fence.ref_seq)
                    fence.generation = res.gc_generation
                    inv.remove(part)
                    result.condemned_packs += res.condemned
                    result.condemned_bytes += res.condemned_bytes
                    result.skipped_young += res.skipped_young
                    result.reap_at = max(result.reap_at, res.reap_at)
                return ok
            except RefsChanged:
                self._attempt()
                rows, fence.ref_seq = self.server.list_ref_history(after_seq=fence.ref_seq)
                self.say(f"{len(rows)} ref versions arrived meanwhile; marking them")
                self.marker.add(newest_heads(rows), rows)
            except GcRaced:
                self._attempt()
                raise _Restart() from None

    # ---------------------------------------------------------------- repack

    def _repack(
        self, inv: Inventory, batch: list[PackId], fence: _Fence, result: PruneResult
    ) -> None:
        """Copy the marked blobs that live only in `batch` into new packs, then condemn
        the batch (a pack whose blobs could not all be copied stays)."""
        inside = set(batch)
        copy: dict[BlobId, BlobLocation] = {}  # one copy of each blob only the batch holds
        for pid in batch:
            for e in inv.packs[pid].entries:
                if (
                    e.blob_id in self.marker.marked
                    and e.blob_id not in copy
                    and not (inv.copies[e.blob_id].keys() - inside)
                ):
                    copy[e.blob_id] = e
        needed: dict[PackId, list[BlobLocation]] = {}
        for loc in copy.values():
            needed.setdefault(loc.pack_id, []).append(loc)
        builder = PackBuilder(self.repo.keys.data_key, self.repo.keys.id_key)
        for pid, locs in needed.items():
            for loc, sealed in self._read_sealed(pid, locs, result):
                builder.add(loc.blob_id, self._kind(loc.blob_id), sealed)
                if builder.full():
                    self._upload(inv, builder, result)
        if len(builder):
            self._upload(inv, builder, result)
        condemned = self._condemn(inv, batch, fence, result)
        result.repacked_packs += len(condemned)

    def _kind(self, bid: BlobId) -> BlobKind:
        return self.marker.marked[bid]

    def _read_sealed(
        self, pid: PackId, locs: list[BlobLocation], result: PruneResult
    ) -> Iterable[tuple[BlobLocation, bytes]]:
        """The authentic sealed envelopes of `locs`, read from pack `pid`; what cannot be
        read or fails authentication is reported (and so keeps its pack)."""
        for group in _ranges(sorted(locs, key=lambda x: x.offset)):
            start = group[0].offset
            end = max(x.offset + x.length for x in group)
            try:
                data = self.server.read_pack(pid, start, end - start)
            except AnySyncError as exc:
                result.problems.append(
                    f"pack {pid.hex()[:8]} cannot be read ({exc.message}); it is kept"
                )
                continue
            for loc in group:
                sealed = data[loc.offset - start : loc.offset - start + loc.length]
                try:
                    envelope.open_(
                        self.repo.keys.data_key,
                        self.repo.keys.id_key,
                        self._kind(loc.blob_id),
                        loc.blob_id,
                        sealed,
                    )
                except IntegrityError as exc:
                    result.problems.append(
                        f"pack {pid.hex()[:8]}: {exc.message}; the pack is kept "
                        "(run `anysync check`)"
                    )
                    continue
                yield loc, sealed

    def _upload(self, inv: Inventory, builder: PackBuilder, result: PruneResult) -> None:
        pack = builder.finish()
        pid = self.server.upload_pack(pack.data, pack.sha256, pack.blobs, maintenance=True)
        entries = tuple(BlobLocation(b.blob_id, pid, b.offset, b.length) for b in pack.blobs)
        inv.add(_NewPack(pid, len(pack.data), int(self.clock()), entries))
        result.uploaded_packs += 1
        result.uploaded_bytes += len(pack.data)

    # ---------------------------------------------------------------- loading

    def _load_trees(
        self, ids: Sequence[BlobId]
    ) -> Mapping[BlobId, list[tree_codec.TreeEntry] | AnySyncError]:
        out: dict[BlobId, list[tree_codec.TreeEntry] | AnySyncError] = {}
        for start in range(0, len(ids), TREE_BATCH):
            loaded = self.repo.load_many(BlobKind.TREE, ids[start : start + TREE_BATCH])
            for tid, data in loaded.items():
                if isinstance(data, AnySyncError):
                    out[tid] = data
                    continue
                try:
                    out[tid] = tree_codec.decode(data)
                except IntegrityError as exc:
                    out[tid] = exc
        return out


def _ranges(locs: list[BlobLocation]) -> Iterable[list[BlobLocation]]:
    """Sorted locations of one pack in groups read with one request each."""
    group: list[BlobLocation] = []
    for loc in locs:
        if group and (
            loc.offset - (group[-1].offset + group[-1].length) > READ_GAP
            or loc.offset + loc.length - group[0].offset > BATCH_BYTES // 8
        ):
            yield group
            group = []
        group.append(loc)
    if group:
        yield group
