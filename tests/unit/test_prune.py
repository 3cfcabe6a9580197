"""Prune's I/O loop (client/prune.py) against a fenced server in memory: what it
condemns, what it repacks, and how it takes a concurrent backup or prune."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import pytest

from anysync.client.prune import Pruner
from anysync.client.prune_plan import MaxUnused, Unreadable
from anysync.client.repo.commit import Commit, Edit
from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import Conflict, GcRaced, NotFound, RefsChanged
from anysync.types import BlobId, BlobKind, BlobLocation, PackId, Ref
from tests.unit.fakes import KEYS

NOW = 1_800_000_000


@dataclass(frozen=True)
class PackInfo:
    pack_id: PackId
    size: int
    created_at: int
    entries: tuple[BlobLocation, ...]


@dataclass(frozen=True)
class Listing:
    gc_generation: int
    ref_seq: int
    packs: list[PackInfo]


@dataclass(frozen=True)
class Condemned:
    gc_generation: int
    condemned: int
    skipped_young: int
    condemned_bytes: int
    reap_at: int


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    commit_id: BlobId
    seq: int
    device_id: int = 1
    by_manage: bool = True


@dataclass
class FencedServer:
    """The server's side of prune at grace 0: condemned packs vanish at once."""

    data: dict[PackId, bytes] = field(default_factory=dict)
    packs: dict[PackId, PackInfo] = field(default_factory=dict)
    refs: dict[str, Ref] = field(default_factory=dict)
    history: list[Version] = field(default_factory=list)
    gc_generation: int = 0
    ref_seq: int = 0
    maintenance: list[PackId] = field(default_factory=list)
    before_condemn: Callable[[], None] | None = None  # runs at each condemn, before the fence
    condemn_calls: int = 0

    def find_blobs_at(self, ids: Sequence[BlobId]) -> tuple[dict[BlobId, BlobLocation], int]:
        found: dict[BlobId, BlobLocation] = {}
        for p in self.packs.values():
            for e in p.entries:
                if e.blob_id in ids:
                    found.setdefault(e.blob_id, e)
        return found, self.gc_generation

    def upload_pack(
        self, data: bytes, sha256: bytes, entries: Sequence[PackedBlob], maintenance: bool = False
    ) -> PackId:
        pid = PackId.random()
        self.data[pid] = data
        locs = tuple(BlobLocation(e.blob_id, pid, e.offset, e.length) for e in entries)
        self.packs[pid] = PackInfo(pid, len(data), NOW - 100_000, locs)
        if maintenance:
            self.maintenance.append(pid)
        return pid

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes:
        if pack_id not in self.data:
            raise NotFound("pack is missing")
        return self.data[pack_id][offset : offset + length]

    def set_ref(self, name: str, commit_id: BlobId, by_manage: bool = True) -> None:
        version = self.refs[name].version + 1 if name in self.refs else 1
        self.refs[name] = Ref(name, commit_id, version)
        self.ref_seq += 1
        self.history.append(Version(name, version, commit_id, self.ref_seq, by_manage=by_manage))

    def list_packs(self, include_entries: bool, include_condemned: bool = False) -> Listing:
        return Listing(self.gc_generation, self.ref_seq, list(self.packs.values()))

    def list_refs_at(self, prefix: str = "") -> tuple[list[Ref], int]:
        return list(self.refs.values()), self.ref_seq

    def list_ref_history(self, name: str = "", after_seq: int = 0) -> tuple[list[Version], int]:
        return [v for v in self.history if v.seq > after_seq], self.ref_seq

    def condemn_packs(
        self, pack_ids: Sequence[PackId], expected_generation: int, expected_ref_seq: int
    ) -> Condemned:
        self.condemn_calls += 1
        if self.before_condemn is not None:
            self.before_condemn()
        if expected_generation != self.gc_generation:
            raise GcRaced("another prune")
        if expected_ref_seq != self.ref_seq:
            raise RefsChanged("refs changed")
        size = 0
        for p in pack_ids:
            size += self.packs.pop(p).size
            del self.data[p]
        self.gc_generation += 1
        return Condemned(self.gc_generation, len(pack_ids), 0, size, NOW)


@pytest.fixture
def server() -> FencedServer:
    return FencedServer()


@pytest.fixture
def repo(server: FencedServer) -> Iterator[Repository]:
    r = Repository(server, KEYS)
    yield r
    r.close()


def snapshot(
    repo: Repository,
    server: FencedServer,
    chunks: dict[str, bytes],
    parent: BlobId | None = None,
    edit: Edit | None = None,
) -> BlobId:
    """A backup of files named after their one chunk, in packs of its own; the ref moves."""
    entries = []
    for name, content in chunks.items():
        cid = repo.save(BlobKind.DATA, content)
        entries.append(
            TreeEntry(name.encode(), EntryType.FILE, 0o644, 0, len(content), chunks=(cid,))
        )
    tree = repo.save_tree(entries)
    commit = Commit(
        "edit" if edit else "backup",
        tree,
        (parent,) if parent else (),
        "ref",
        1,
        0,
        1,
        "d",
        "h",
        edit=edit,
    )
    cid = repo.save_commit(commit)
    repo.finish()
    server.set_ref("ref", cid)
    return cid


def orphan(repo: Repository, content: bytes) -> BlobId:
    """Blobs uploaded by a backup that never committed."""
    bid = repo.save(BlobKind.DATA, content)
    repo.finish()
    return bid


def pruner(server: FencedServer, repo: Repository, fraction: float = 0.0) -> Pruner:
    return Pruner(
        server, repo, max_unused=MaxUnused(fraction=fraction), min_pack_age=0, clock=lambda: NOW
    )


def readable(server: FencedServer, ids: Sequence[BlobId], kind: BlobKind) -> bool:
    fresh = Repository(server, KEYS)
    try:
        return all(isinstance(v, bytes) for v in fresh.load_many(kind, ids).values())
    finally:
        fresh.close()


BIG = 200_000


def blob(tag: int) -> bytes:
    return random.Random(tag).randbytes(BIG)  # incompressible


def test_forgotten_and_orphaned_data_is_freed_and_kept_data_stays(
    server: FencedServer, repo: Repository
) -> None:
    s1 = snapshot(repo, server, {"old": blob(1), "both": blob(2)})
    waste = orphan(repo, blob(3))
    s2 = snapshot(repo, server, {"both": blob(2), "new": blob(4)}, parent=s1)
    edit = snapshot(repo, server, {"both": blob(2), "new": blob(4)}, s2, Edit(forget=(s1,)))
    before = sum(p.size for p in server.packs.values())

    result = pruner(server, repo).run()

    after = sum(p.size for p in server.packs.values())
    assert result.plan is not None and len(result.plan.dead) == 1  # the orphan's pack
    assert result.repacked_packs == 1  # s1's pack: its commit stays, its chunk goes
    assert server.maintenance and result.uploaded_bytes > 0
    assert result.freed_bytes == before - after and after < before - 2 * BIG
    assert not readable(server, [waste], BlobKind.DATA)
    assert not readable(server, [repo.blob_id(blob(1))], BlobKind.DATA)
    assert readable(server, [s1, s2, edit], BlobKind.COMMIT)
    assert readable(server, [repo.blob_id(blob(2)), repo.blob_id(blob(4))], BlobKind.DATA)
    # A second run finds nothing left to do.
    again = pruner(server, repo).run()
    assert again.condemned_packs == 0 and again.uploaded_packs == 0


def test_dry_run_changes_nothing(server: FencedServer, repo: Repository) -> None:
    snapshot(repo, server, {"a": blob(1)})
    orphan(repo, blob(3))
    result = pruner(server, repo).run(dry_run=True)
    assert result.plan is not None and len(result.plan.dead) == 1
    assert server.condemn_calls == 0 and len(server.packs) == 2


def test_an_edit_without_manage_frees_nothing(server: FencedServer, repo: Repository) -> None:
    s1 = snapshot(repo, server, {"old": blob(1)})
    snapshot(repo, server, {"new": blob(4)}, s1, Edit(forget=(s1,)))
    server.history[-1] = replace(server.history[-1], by_manage=False)
    pruner(server, repo).run()
    assert readable(server, [repo.blob_id(blob(1))], BlobKind.DATA)


def test_a_backup_that_reuses_a_dead_blob_meanwhile_keeps_it(
    server: FencedServer, repo: Repository
) -> None:
    snapshot(repo, server, {"a": blob(1)})
    reused = orphan(repo, blob(3))
    other = Repository(server, KEYS)

    def backup_lands() -> None:
        if server.condemn_calls == 1:  # between the prune's mark and its condemnation
            snapshot(
                other, server, {"a": blob(1), "b": blob(3)}, parent=server.refs["ref"].commit_id
            )

    server.before_condemn = backup_lands
    result = pruner(server, repo).run()
    other.close()
    assert readable(server, [reused], BlobKind.DATA)
    assert result.condemned_packs == 0 and server.condemn_calls == 1  # nothing left to condemn


def test_another_prune_meanwhile_restarts_the_plan(server: FencedServer, repo: Repository) -> None:
    snapshot(repo, server, {"a": blob(1)})
    orphan(repo, blob(3))

    def other_prune() -> None:
        if server.condemn_calls == 1:
            server.gc_generation += 1

    server.before_condemn = other_prune
    result = pruner(server, repo).run()
    assert result.condemned_packs == 1 and server.condemn_calls == 2
    assert readable(server, [repo.blob_id(blob(1))], BlobKind.DATA)


def test_an_account_that_keeps_changing_gives_up(server: FencedServer, repo: Repository) -> None:
    snapshot(repo, server, {"a": blob(1)})
    orphan(repo, blob(3))
    server.before_condemn = lambda: setattr(server, "gc_generation", server.gc_generation + 1)
    with pytest.raises(Conflict, match="kept changing"):
        pruner(server, repo).run()
    assert len(server.packs) == 2


def test_an_unreadable_tree_condemns_nothing(server: FencedServer, repo: Repository) -> None:
    s1 = snapshot(repo, server, {"a": blob(1)})
    orphan(repo, blob(3))
    tree = repo.load_commit(s1).tree
    loc = server.find_blobs_at([tree])[0][tree]
    data = bytearray(server.data[loc.pack_id])
    data[loc.offset + 40] ^= 1
    server.data[loc.pack_id] = bytes(data)
    with pytest.raises(Unreadable, match="anysync check"):
        pruner(server, Repository(server, KEYS)).run()
    assert server.condemn_calls == 0


def test_a_bad_blob_keeps_its_pack(server: FencedServer, repo: Repository) -> None:
    s1 = snapshot(repo, server, {"old": blob(1), "keep": blob(2)})
    snapshot(repo, server, {"keep": blob(2)}, s1, Edit(forget=(s1,)))
    keep = repo.blob_id(blob(2))
    loc = server.find_blobs_at([keep])[0][keep]  # its only copy, in s1's half-forgotten pack
    data = bytearray(server.data[loc.pack_id])
    data[loc.offset + 40] ^= 1
    server.data[loc.pack_id] = bytes(data)
    result = pruner(server, repo).run()
    assert result.plan is not None and result.plan.repack == [loc.pack_id]
    assert any("failed authentication" in p for p in result.problems)
    assert loc.pack_id in server.packs  # left alone
