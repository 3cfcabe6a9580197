"""client/repair.py against the in-memory server: `repair index` makes the index what
the pack headers say and trusts nothing else; `repair snapshots` replaces each damaged
snapshot by a copy without the lost files, which the listing, restore's resolve and
check then see. (tests/integration/test_repair.py does it through the CLI.)"""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import backup, repair
from anysync.client.check import check
from anysync.client.forget import CountingEdits, Writer
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import RepairResult, Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.errors import GcRaced, IntegrityError, NotFound
from anysync.types import BlobId, BlobLocation, PackId, Ref
from tests.unit.fakes import KEYS, MemoryRemote

ORIGIN = backup.Origin(1, "dev", "host")
ME = Writer(7, "desk", "deskhost")
A_TXT = random.Random(1).randbytes(3000)


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    commit_id: BlobId
    by_manage: bool


class RepairRemote(MemoryRemote):
    """MemoryRemote plus ref_history (every update by a manage device) and RepairIndex
    as the server does it (rows := entries, the gc_generation fence)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.repair_calls = 0

    def update_ref(
        self, name: str, expected_version: int, commit_id: BlobId, gc_generation: int | None = None
    ) -> Ref:
        ref = super().update_ref(name, expected_version, commit_id, gc_generation)
        self.rows.append(Row(name, commit_id, True))
        return ref

    def list_ref_history(self, name: str = "", after_seq: int = 0) -> tuple[list[Row], int]:
        return [r for r in self.rows if not name or r.name == name], len(self.rows)

    def repair_index(
        self, pack_id: PackId, entries: Sequence[PackedBlob], expected_generation: int
    ) -> RepairResult:
        self.repair_calls += 1
        if expected_generation != self.gc_generation:
            raise GcRaced("packs were condemned meanwhile")
        if pack_id not in self.packs:
            raise NotFound(f"no pack {pack_id}")
        have = {b: loc for b, loc in self.index.items() if loc.pack_id == pack_id}
        wanted = {e.blob_id: BlobLocation(e.blob_id, pack_id, e.offset, e.length) for e in entries}
        stale = [b for b, loc in have.items() if wanted.get(b) != loc]
        new = [loc for b, loc in wanted.items() if have.get(b) != loc]
        for b in stale:
            del self.index[b]
        for loc in new:
            self.index[loc.blob_id] = loc
        if stale:
            self.gc_generation += 1
        return RepairResult(len(new), len(stale), self.gc_generation)


@pytest.fixture
def remote() -> RepairRemote:
    return RepairRemote()


@pytest.fixture
def src(tmp_path: Path, remote: RepairRemote, state: StateDB) -> Path:
    """src/{keep.txt, docs/a.txt}: snapshot 1; src/new.txt added: snapshot 2."""
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "keep.txt").write_bytes(b"kept in both snapshots")
    (src / "docs" / "a.txt").write_bytes(A_TXT)
    back_up(remote, state, src)
    (src / "new.txt").write_bytes(b"only in the second snapshot")
    back_up(remote, state, src)
    return src


def back_up(remote: RepairRemote, state: StateDB, src: Path) -> None:
    repo = Repository(remote, KEYS)
    try:
        backup.run_backup(
            repo, remote, state, [src], ORIGIN, Progress("b", io.StringIO(), enabled=False)
        )
    finally:
        repo.close()


def damaged_paths(remote: RepairRemote, state: StateDB) -> dict[str, list[str]]:
    """check's verdict: snapshot ID → damaged paths."""
    repo = Repository(remote, KEYS)
    try:
        result = check(RefBook(remote, repo, state), repo, remote, CountingEdits(remote))
    finally:
        repo.close()
    return {d.snapshot.id.hex(): [p for p, _ in d.files] for d in result.damaged}


def listing(remote: RepairRemote, state: StateDB) -> list[history.Snapshot]:
    repo = Repository(remote, KEYS)
    try:
        return history.snapshots(
            RefBook(remote, repo, state), warn=pytest.fail, counting=CountingEdits(remote)
        )
    finally:
        repo.close()


def files_of(remote: RepairRemote, tree: BlobId) -> set[str]:
    repo = Repository(remote, KEYS)
    out: set[str] = set()

    def walk(tid: BlobId, prefix: str) -> None:
        for e in repo.load_tree(tid):
            if e.subtree is not None:
                walk(e.subtree, f"{prefix}{e.display_name}/")
            else:
                out.add(prefix + e.display_name)

    try:
        walk(tree, "")
    finally:
        repo.close()
    return {p.rsplit("src/", 1)[-1] for p in out}


def run_repair(
    remote: RepairRemote,
    state: StateDB,
    warn: Callable[[str], None] = pytest.fail,
    *,
    forget: bool = False,
    dry_run: bool = False,
) -> repair.SnapshotReport:
    repo = Repository(remote, KEYS)
    try:
        return repair.repair_snapshots(
            repo,
            RefBook(remote, repo, state),
            remote,
            ME,
            warn,
            forget=forget,
            dry_run=dry_run,
        )
    finally:
        repo.close()


def chunk_of(content: bytes) -> BlobId:
    return Repository(MemoryRemote(), KEYS).blob_id(content)


# ---------------------------------------------------------------- repair index


def test_index_diff_counts_rows_to_add_and_to_remove() -> None:
    a, b, c = (BlobId(bytes([i]) * 32) for i in (1, 2, 3))
    header = [PackedBlob(a, 1, 0, 10), PackedBlob(b, 1, 10, 5), PackedBlob(a, 1, 15, 10)]
    assert repair.index_diff([(a.raw, 0, 10), (b.raw, 10, 5)], header) == (0, 0)
    assert repair.index_diff([(a.raw, 0, 10)], header) == (1, 0)  # b's row is missing
    # c is no blob of the pack; b's row points at the wrong place
    assert repair.index_diff([(a.raw, 0, 10), (b.raw, 11, 5), (c.raw, 0, 3)], header) == (1, 2)


def test_the_pack_header_is_read_from_the_tail_and_authenticated(
    remote: RepairRemote, src: Path
) -> None:
    for p in remote.list_packs(include_entries=True).packs:
        header = repair.read_pack_header(remote, KEYS, p)
        assert {(b.blob_id, b.offset, b.length) for b in header} == {
            (e.blob_id, e.offset, e.length) for e in p.entries
        }
    p = remote.list_packs(include_entries=True).packs[0]
    data = bytearray(remote.packs[p.pack_id])
    data[-100] ^= 1  # inside the sealed header
    remote.packs[p.pack_id] = bytes(data)
    with pytest.raises(IntegrityError):
        repair.read_pack_header(remote, KEYS, p)
    with pytest.raises(IntegrityError, match="truncated"):
        repair.read_pack_header(remote, KEYS, dataclasses.replace(p, size=5))


def test_repair_index_restores_lost_rows_drops_false_ones_and_leaves_unreadable_packs(
    remote: RepairRemote, state: StateDB, src: Path
) -> None:
    assert damaged_paths(remote, state) == {}
    a_txt = chunk_of(A_TXT)
    lost = remote.index.pop(a_txt)
    keep = chunk_of(b"kept in both snapshots")
    right = remote.index[keep]
    wrong = dataclasses.replace(right, offset=right.offset + 1)
    remote.index[keep] = wrong
    broken = PackId.random()  # recorded, not readable
    remote.packs[broken] = b"not a pack at all, and longer than a trailer is long"
    damaged = {p for ps in damaged_paths(remote, state).values() for p in ps}
    assert any(p.endswith("docs/a.txt") for p in damaged)

    dry = repair.repair_index(remote, KEYS, dry_run=True, say=lambda _: None)
    assert (dry.added, dry.removed, dry.unreadable) == (2, 1, 1)
    assert remote.repair_calls == 0 and a_txt not in remote.index

    done = repair.repair_index(remote, KEYS, say=lambda _: None)
    assert (done.added, done.removed, done.unreadable, len(done.fixed)) == (2, 1, 1, 1)
    assert remote.index[a_txt] == lost and remote.index[keep] == right
    again = repair.repair_index(remote, KEYS, say=lambda _: None)
    assert (again.fixed, again.unreadable) == ([], 1)
    del remote.packs[broken]
    assert damaged_paths(remote, state) == {}


def test_repair_index_lists_again_when_a_prune_races_it(
    remote: RepairRemote, state: StateDB, src: Path
) -> None:
    remote.index.pop(chunk_of(A_TXT))
    real = remote.repair_index
    raced = []

    def racing(pack_id: PackId, entries: Sequence[PackedBlob], gen: int) -> RepairResult:
        if not raced:
            raced.append(gen)
            remote.gc_generation += 1  # a prune condemned something meanwhile
        return real(pack_id, entries, gen)

    remote.repair_index = racing  # type: ignore[method-assign]
    done = repair.repair_index(remote, KEYS, say=lambda _: None)
    assert raced and len(done.fixed) == 1 and damaged_paths(remote, state) == {}


# ---------------------------------------------------------------- rebuilding trees


def test_rebuild_drops_lost_files_and_unreadable_directories_and_keeps_sound_subtrees() -> None:
    ok, bad = BlobId(b"\1" * 32), BlobId(b"\2" * 32)
    sound, lost_dir, mixed, root = (BlobId(bytes([i]) * 32) for i in (10, 11, 12, 13))

    def file(name: bytes, chunk: BlobId) -> TreeEntry:
        return TreeEntry(name, EntryType.FILE, 0o644, 1, 1, (chunk,))

    def folder(name: bytes, sub: BlobId) -> TreeEntry:
        return TreeEntry(name, EntryType.DIR, 0o755, 1, subtree=sub)

    trees: repair.checking.Trees = {
        sound: [file(b"a", ok)],
        lost_dir: "its directory listing cannot be read",
        mixed: [file(b"good", ok), file(b"gone", bad)],
        root: [folder(b"s", sound), folder(b"l", lost_dir), folder(b"m", mixed), file(b"x", bad)],
    }
    damage = repair._Damage(trees, {bad: "lost"})
    saved: list[list[TreeEntry]] = []

    def save(entries: list[TreeEntry]) -> BlobId:
        saved.append(entries)
        return BlobId(bytes([100 + len(saved)]) * 32)

    assert repair.rebuild(sound, damage, save, {}) == sound and not saved
    new_root = repair.rebuild(root, damage, save, {})
    assert [[e.name for e in es] for es in saved] == [[b"good"], [b"s", b"m"]]
    assert new_root == BlobId(bytes([102]) * 32)
    assert saved[1][0].subtree == sound and saved[1][1].subtree == BlobId(bytes([101]) * 32)
    assert repair.rebuild(lost_dir, damage, save, {}) is None
    assert sorted(p for p, _ in damage.under(root)) == ["l", "m/gone", "x"]


# ---------------------------------------------------------------- repair snapshots


def test_repair_snapshots_replaces_each_damaged_snapshot_and_check_is_clean_after(
    remote: RepairRemote, state: StateDB, src: Path
) -> None:
    before = listing(remote, state)
    remote.index.pop(chunk_of(A_TXT))  # docs/a.txt is in both snapshots
    assert set(damaged_paths(remote, state)) == {s.id.hex() for s in before}

    dry = run_repair(remote, state, dry_run=True)
    assert [len(r.snapshots) for r in dry.refs] == [2] and remote.rows[-1].commit_id == (
        listing(remote, state)[-1].id
    )

    report = run_repair(remote, state)
    (ref,) = report.refs
    assert ref.edit is not None and ref.edit.commit.kind == "edit"
    assert all(len(r.lost) == 1 and r.lost[0].endswith("docs/a.txt") for r in ref.snapshots)
    after = listing(remote, state)
    assert [s.commit.counter for s in after] == [s.commit.counter for s in before]
    assert [s.commit.time_ns for s in after] == [s.commit.time_ns for s in before]
    assert all(s.id not in {b.id for b in before} for s in after)
    for s in after:
        assert s.commit.parents == () and s.commit.message == "repaired: 1 files lost"
        assert "docs/a.txt" not in files_of(remote, s.commit.tree)
        assert "keep.txt" in files_of(remote, s.commit.tree)
    assert "new.txt" in files_of(remote, after[-1].commit.tree)
    assert damaged_paths(remote, state) == {}
    # The original's ID names its replacement, as restore resolves it.
    repo = Repository(remote, KEYS)
    book = RefBook(remote, repo, state)
    found = history.resolve(
        book, before[0].id.hex()[:8], pytest.fail, counting=CountingEdits(remote)
    )
    repo.close()
    assert found.id == after[0].id
    assert run_repair(remote, state).refs == []  # nothing left to repair


def test_repair_snapshots_with_forget_forgets_the_originals(
    remote: RepairRemote, state: StateDB, src: Path
) -> None:
    remote.index.pop(chunk_of(b"only in the second snapshot"))  # new.txt: snapshot 2 only
    before = listing(remote, state)
    report = run_repair(remote, state, forget=True)
    (ref,) = report.refs
    assert [r.original.id for r in ref.snapshots] == [before[-1].id]
    assert ref.edit is not None and ref.edit.commit.edit is not None
    assert ref.edit.commit.edit.forget == (before[-1].id,)
    assert [s.id for s in listing(remote, state)] == [before[0].id]
    # the edit's tree is the newest kept snapshot's: the ref's state is sound
    assert ref.edit.commit.tree == before[0].commit.tree
    assert damaged_paths(remote, state) == {}


def test_a_damaged_sync_state_is_left_for_the_devices_that_hold_it(
    remote: RepairRemote, state: StateDB
) -> None:
    repo = Repository(remote, KEYS)
    book = RefBook(remote, repo, state)
    good, lost = repo.save_data([b"good file"])[0], repo.save_data([b"lost file"])[0]
    tree = repo.save_tree(
        [
            TreeEntry(b"good", EntryType.FILE, 0o644, 1, 9, good),
            TreeEntry(b"lost", EntryType.FILE, 0o644, 1, 9, lost),
        ]
    )
    repo.finish()

    def make(head: history.Snapshot | None) -> Commit:
        return Commit(
            kind="sync", tree=tree, parents=(), ref="s-folder", counter=1, time_ns=5,
            device_id=1, device="laptop", hostname="host", paths=("Folder",),
            retention="keep-last=3",
        )  # fmt: skip

    old = history.advance(book, "s-folder", make)
    repo.close()
    remote.index.pop(lost[0])

    said: list[str] = []
    (ref,) = run_repair(remote, state, said.append).refs
    # The state is not rewritten without "lost": devices that hold it would delete it.
    assert any("1 file(s) of the current state are lost" in m for m in said), said
    assert ref.state is not None and ref.state.replacement is None
    assert ref.state.lost == ["lost"]
    assert [r.original.id for r in ref.snapshots] == [old.id]
    assert ref.edit is not None and ref.edit.commit.tree == old.commit.tree


def test_a_repaired_snapshot_keeps_its_tags(
    remote: RepairRemote, state: StateDB, src: Path
) -> None:
    repo = Repository(remote, KEYS)
    try:
        backup.run_backup(
            repo, remote, state, [src], ORIGIN, Progress("b", io.StringIO(), enabled=False),
            backup.Labels(tags=("before-upgrade",)),
        )  # fmt: skip
    finally:
        repo.close()
    remote.index.pop(chunk_of(A_TXT))
    run_repair(remote, state)
    assert [s.commit.tags for s in listing(remote, state)][-1] == ("before-upgrade",)
