"""The garbage-collection fence on the client (docs/prune-design.md §7): a session keeps
the generation of its first FindBlobs answer and sends it with every ref update; when a
prune condemns packs meanwhile, backup and sync check again what the server holds,
upload again what went missing, and commit nothing that names a deleted blob. Real
files, real Repository, RefBook, backup and sync engine against the in-memory server,
whose condemn() deletes packs at once (a prune at grace 0)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import backup
from anysync.client.repo.commit import Commit, Edit
from anysync.client.repo.refs import RefBook, Snapshot
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, flat
from anysync.client.sync.state import Folder, SyncState
from anysync.errors import GcRaced
from anysync.types import BlobId, BlobKind, BlobLocation, PackId, Ref
from tests.unit.fakes import KEYS, MemoryRemote

DEVICE = engine.Device(1, "dev", "host")
ORIGIN = backup.Origin(1, "dev", "host")


class PruneBeforeCommit(MemoryRemote):
    """A prune that condemns the `doomed` packs right before this device's next ref
    update (the dedup-then-delete race)."""

    def __init__(self) -> None:
        super().__init__()
        self.doomed: list[PackId] = []
        self.refused: list[str] = []

    def update_ref(
        self,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        gc_generation: int | None = None,
    ) -> Ref:
        if self.doomed:
            doomed, self.doomed = self.doomed, []
            self.condemn(doomed)
        try:
            return super().update_ref(name, expected_version, commit_id, gc_generation)
        except GcRaced:
            self.refused.append(name)
            raise


class PruneOnFind(MemoryRemote):
    """A prune that condemns the `doomed` packs right after an answer that holds
    `signal`."""

    def __init__(self, signal: BlobId) -> None:
        super().__init__()
        self.signal = signal
        self.doomed: list[PackId] = []

    def find_blobs_at(self, ids: Sequence[BlobId]) -> tuple[dict[BlobId, BlobLocation], int]:
        answer = super().find_blobs_at(ids)
        if self.doomed and self.signal in answer[0]:
            doomed, self.doomed = self.doomed, []
            self.condemn(doomed)
        return answer


def fresh_repo(remote: MemoryRemote) -> Repository:
    return Repository(remote, KEYS)


def orphan(remote: MemoryRemote, *contents: bytes) -> PackId:
    """A pack that no commit names (an abandoned upload, a lost race): what a prune
    condemns. Each content is one chunk, as a small file's is."""
    repo = fresh_repo(remote)
    before = set(remote.packs)
    for content in contents:
        repo.save(BlobKind.DATA, content)
    repo.finish()
    repo.close()
    (pack,) = set(remote.packs) - before
    return pack


def stored_files(remote: MemoryRemote, tree: BlobId) -> dict[bytes, bytes]:
    """Every file under `tree`, read back by a new session: fails if a blob is gone."""
    repo = fresh_repo(remote)
    out: dict[bytes, bytes] = {}

    def walk(tid: BlobId, prefix: bytes) -> None:
        for e in repo.load_tree(tid):
            if e.subtree is not None:
                walk(e.subtree, prefix + e.name + b"/")
            else:
                out[prefix + e.name] = b"".join(repo.load(BlobKind.DATA, c) for c in e.chunks)

    try:
        walk(tree, b"")
    finally:
        repo.close()
    return out


# ---------------------------------------------------------------- Repository


def test_the_first_answer_sets_the_generation_and_a_higher_one_makes_it_stale(
    remote: MemoryRemote,
) -> None:
    remote.gc_generation = 3
    repo = fresh_repo(remote)
    try:
        repo.finish()  # nothing to store: it still asks once, before any upload could
        assert (repo.generation, repo.stale) == (3, False)
        repo.save(BlobKind.DATA, b"one")
        repo.finish()
        assert (repo.generation, repo.stale) == (3, False)
        remote.gc_generation = 4
        repo.missing([repo.blob_id(b"something not stored")])
        assert (repo.generation, repo.stale) == (3, True)  # the fence stays the first one
    finally:
        repo.close()


def test_revalidate_returns_what_was_pruned_and_forgets_it(remote: MemoryRemote) -> None:
    repo = fresh_repo(remote)
    try:
        kept = repo.save(BlobKind.DATA, b"kept")
        repo.finish()
        doomed_pack = set(remote.packs)
        pruned = repo.save(BlobKind.DATA, b"pruned")
        other = repo.save(BlobKind.DATA, b"also pruned")
        repo.finish()
        remote.condemn([p for p in remote.packs if p not in doomed_pack])
        assert repo.revalidate() == {pruned, other}
        assert (repo.generation, repo.stale) == (1, False)
        assert repo.missing([kept, pruned]) == {pruned}  # asked again, not remembered
        repo.save(BlobKind.DATA, b"pruned")  # saved again: uploaded again
        repo.finish()
        assert pruned in remote.index and other not in remote.index
        assert repo.load(BlobKind.DATA, pruned) == b"pruned"
    finally:
        repo.close()


def test_revalidate_stores_the_queue_first(remote: MemoryRemote) -> None:
    repo = fresh_repo(remote)
    try:
        queued = repo.save(BlobKind.DATA, b"queued, not flushed")
        assert repo.revalidate() == set()
        assert queued in remote.index
    finally:
        repo.close()


def test_a_maintenance_repository_uploads_maintenance_packs(remote: MemoryRemote) -> None:
    for maintenance in (False, True):
        repo = Repository(remote, KEYS, maintenance=maintenance)
        repo.save(BlobKind.DATA, f"blob {maintenance}".encode())
        repo.finish()
        repo.close()
    assert len(remote.packs) == 2 and len(remote.maintenance_packs) == 1


def test_a_read_from_a_pack_that_is_gone_locates_the_blob_again(remote: MemoryRemote) -> None:
    writer = fresh_repo(remote)
    bid = writer.save(BlobKind.DATA, b"moved by a repack")
    writer.finish()
    writer.close()
    (old_pack,) = remote.packs
    reader = fresh_repo(remote)
    try:
        reader.locate([bid])  # cached: in the old pack
        # A repack copies the pack's envelopes into a new pack; the old one is reaped.
        new_pack = PackId.random()
        remote.packs[new_pack] = remote.packs[old_pack]
        remote.index[bid] = replace(remote.index[bid], pack_id=new_pack)
        remote.condemn([old_pack])
        assert reader.load(BlobKind.DATA, bid) == b"moved by a repack"
        remote.condemn(list(remote.packs))
        with pytest.raises(Exception, match="missing"):
            reader.load(BlobKind.DATA, bid)  # located again once, and gone for good
    finally:
        reader.close()


def test_advance_sends_the_generation_and_does_not_retry_a_gc_race(
    remote: MemoryRemote, repo: Repository, state: StateDB
) -> None:
    book = RefBook(remote, repo, state)

    def make(head: object) -> Commit:
        tree = repo.save_tree([])
        return Commit("backup", tree, (), "r-x", 1, 1, 1, "dev", "host", ("/x",))

    repo.finish()
    remote.gc_generation += 1  # condemned after this session looked
    with pytest.raises(GcRaced):
        book.advance("r-x", make)
    assert remote.update_calls == 1 and "r-x" not in remote.refs
    repo.revalidate()
    assert book.advance("r-x", make).committed is not None


# ---------------------------------------------------------------- backup


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "a").write_bytes(b"content of a")
    (root / "sub" / "b").write_bytes(b"content of b")
    return root


def run_backup(remote: MemoryRemote, db: StateDB, src: Path) -> backup.BackupResult:
    repo = fresh_repo(remote)
    try:
        progress = Progress("backed up", io.StringIO(), enabled=False)
        return backup.run_backup(repo, remote, db, [src], ORIGIN, progress)
    finally:
        repo.close()


def test_a_backup_raced_by_a_prune_uploads_again_and_commits(src: Path, state: StateDB) -> None:
    remote = PruneBeforeCommit()
    run_backup(remote, state, src)
    # The new file's chunk is on the server, named by no commit: the backup dedups it,
    # then a prune condemns it before the commit.
    remote.doomed = [orphan(remote, b"new file")]
    (src / "c").write_bytes(b"new file")
    result = run_backup(remote, state, src)
    assert remote.refused  # the first commit was refused, and retried
    assert stored_files(remote, result.snapshot.commit.tree) == {
        b"src/a": b"content of a",
        b"src/sub/b": b"content of b",
        b"src/c": b"new file",
    }
    assert any("pruned from the server during this backup" in w for w in result.stats.warnings)
    assert run_backup(remote, state, src).stats.files_read == 0  # the cache is sound again


def test_a_backup_that_sees_a_newer_generation_checks_again_before_it_commits(
    src: Path, state: StateDB
) -> None:
    a_chunk = fresh_repo(MemoryRemote()).blob_id(b"content of a")
    remote = PruneOnFind(signal=a_chunk)
    run_backup(remote, state, src)
    # The next backup confirms a's cached chunk first; right after, a prune condemns the
    # pack holding the new file's chunk (unreferenced), before the backup looks it up.
    remote.doomed = [orphan(remote, b"new file")]
    (src / "c").write_bytes(b"new file")
    result = run_backup(remote, state, src)
    # The commit went through at once: the backup noticed the newer generation itself.
    assert remote.update_calls == 2
    assert stored_files(remote, result.snapshot.commit.tree) == {
        b"src/a": b"content of a",
        b"src/sub/b": b"content of b",
        b"src/c": b"new file",
    }


def test_a_backup_gives_up_when_every_commit_is_raced(src: Path, state: StateDB) -> None:
    class AlwaysPruned(MemoryRemote):
        def update_ref(
            self,
            name: str,
            expected_version: int,
            commit_id: BlobId,
            gc_generation: int | None = None,
        ) -> Ref:
            self.gc_generation += 1
            return super().update_ref(name, expected_version, commit_id, gc_generation)

    remote = AlwaysPruned()
    with pytest.raises(GcRaced, match="pruned again and again"):
        run_backup(remote, state, src)
    assert remote.update_calls == backup.REVALIDATIONS + 1


# ---------------------------------------------------------------- sync


@pytest.fixture
def folder(tmp_path: Path, state: StateDB) -> Iterator[Folder]:
    root = tmp_path / "Folder"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b.txt").write_bytes(b"in a directory")
    (root / "c.txt").write_bytes(b"a file")
    ref = engine.folder_ref(fresh_repo(MemoryRemote()), "f")
    yield SyncState(state).add_folder("f", root, ref)


def sync(remote: MemoryRemote, state: StateDB, folder: Folder) -> engine.PassResult:
    repo = fresh_repo(remote)
    try:
        return engine.run_pass(repo, remote, state, folder, DEVICE)
    finally:
        repo.close()


def head(remote: MemoryRemote, state: StateDB, folder: Folder) -> Commit:
    repo = fresh_repo(remote)
    try:
        _, snap = RefBook(remote, repo, state).head(folder.ref)
        assert snap is not None
        return snap.commit
    finally:
        repo.close()


def test_a_renamed_file_whose_chunk_was_pruned_is_read_again(
    remote: MemoryRemote, state: StateDB, folder: Folder
) -> None:
    sync(remote, state, folder)
    (chunk,) = flat.load(fresh_repo(remote), head(remote, state, folder).tree)[b"a/b.txt"].chunks
    del remote.index[chunk]  # gone from the server (no head names it any more, say)
    os.rename(folder.path / "a", folder.path / "z")  # z/b.txt keeps its whole stat
    result = sync(remote, state, folder)
    assert result.committed is not None and chunk in remote.index
    assert any("no longer on the server" in w for w in result.warnings)
    assert stored_files(remote, head(remote, state, folder).tree)[b"z/b.txt"] == b"in a directory"


def test_a_sync_pass_raced_by_a_prune_scans_again_and_commits(
    state: StateDB, folder: Folder
) -> None:
    remote = PruneBeforeCommit()
    sync(remote, state, folder)
    remote.doomed = [orphan(remote, b"new")]  # deduplicated, then condemned
    (folder.path / "d.txt").write_bytes(b"new")
    result = sync(remote, state, folder)
    assert remote.refused == [folder.ref] and result.committed is not None
    assert stored_files(remote, head(remote, state, folder).tree) == {
        b"a/b.txt": b"in a directory",
        b"c.txt": b"a file",
        b"d.txt": b"new",
    }


def test_sync_builds_on_an_edit_head_and_carries_its_retention_forward(
    remote: MemoryRemote, state: StateDB, folder: Folder
) -> None:
    sync(remote, state, folder)
    repo = fresh_repo(remote)
    try:
        book = RefBook(remote, repo, state)

        def forget(prev: Snapshot | None) -> Commit:
            assert prev is not None
            c = prev.commit
            return Commit(
                "edit", c.tree, (prev.id,), c.ref, c.counter + 1, c.time_ns + 1, 2, "other",
                "host2", c.paths, edit=Edit(policy="keep-daily 7"), retention="keep-daily 7",
            )  # fmt: skip

        book.advance(folder.ref, forget)
    finally:
        repo.close()
    assert sync(remote, state, folder).committed is None  # the edit changed no file
    (folder.path / "c.txt").write_bytes(b"edited")
    assert sync(remote, state, folder).committed is not None
    now = head(remote, state, folder)
    assert (now.kind, now.retention) == ("sync", "keep-daily 7")
    assert stored_files(remote, now.tree)[b"c.txt"] == b"edited"
