"""Each layer of defence on its own: checks that a later layer would also catch are
tested here directly, so that losing one of them cannot go unnoticed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zstandard

from anysync import crypto
from anysync.cli.progress import Progress
from anysync.client.repo import envelope, history, refs
from anysync.client.repo.commit import Commit
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.restore import _Restorer
from anysync.client.statedb import StateDB
from anysync.client.sync import engine
from anysync.client.sync.state import SyncState
from anysync.errors import Conflict, HostilePath, IntegrityError, RollbackError
from anysync.types import BlobId, BlobKind, Ref
from tests.unit.fakes import KEYS, MemoryRemote


class AlwaysConflicting(MemoryRemote):
    """A server on which another device always wins the race to the ref."""

    def update_ref(
        self,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        gc_generation: int | None = None,
    ) -> Ref:
        self.update_calls += 1
        raise Conflict("ref changed concurrently")


def _bid(plaintext: bytes) -> BlobId:
    return envelope.blob_id(KEYS.id_key, plaintext)


def _open(kind: BlobKind, bid: BlobId, sealed: bytes) -> bytes:
    return envelope.open_(KEYS.data_key, KEYS.id_key, kind, bid, sealed)


# ---------------------------------------------------------------- the envelope


def test_blob_id_is_bound_by_the_aad_itself() -> None:
    """A server answering blob Y with blob X's envelope fails authentication, not only
    the hash check after decryption."""
    x, y = b"content of blob X" * 10, b"content of blob Y" * 10
    sealed = envelope.seal(KEYS.data_key, BlobKind.DATA, _bid(x), x)
    assert _open(BlobKind.DATA, _bid(x), sealed) == x
    with pytest.raises(IntegrityError, match="failed authentication"):
        _open(BlobKind.DATA, _bid(y), sealed)


def test_plaintext_that_does_not_hash_to_its_id_is_refused() -> None:
    """Sealed honestly under an ID that is not its keyed hash (e.g. a client with a
    different ID key, or a bug): authentication passes, the ID check must not."""
    claimed = _bid(b"what the ID promises")
    sealed = envelope.seal(KEYS.data_key, BlobKind.DATA, claimed, b"something else entirely")
    with pytest.raises(IntegrityError, match="does not match its ID"):
        _open(BlobKind.DATA, claimed, sealed)


def _sealed_zstd(plaintext: bytes, bid: BlobId, write_content_size: bool) -> bytes:
    """An authentic envelope around a zstd frame made as we choose."""
    body = zstandard.ZstdCompressor(write_content_size=write_content_size).compress(plaintext)
    salt = os.urandom(envelope.SALT_SIZE)
    header = bytes([envelope.VERSION, BlobKind.DATA, envelope.FLAG_ZSTD]) + salt
    key, nonce = envelope._key_nonce(KEYS.data_key, salt)
    return header + crypto.aead_encrypt(key, nonce, body, header + bid.raw)


@pytest.mark.parametrize("declared", [True, False], ids=["size-in-frame", "size-not-declared"])
def test_decompression_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch, declared: bool) -> None:
    """An authentic blob (right key, right ID) whose plaintext is over the cap is refused,
    whether or not its zstd frame declares its size."""
    cap = 1 << 20
    monkeypatch.setattr(envelope, "MAX_PLAINTEXT", cap)
    at_cap = b"\0" * cap
    assert _open(BlobKind.DATA, _bid(at_cap), _sealed_zstd(at_cap, _bid(at_cap), declared)) == (
        at_cap
    )
    over = b"\0" * (cap + 1)
    sealed = _sealed_zstd(over, _bid(over), declared)
    with pytest.raises(IntegrityError, match=r"oversized plaintext|does not decompress"):
        _open(BlobKind.DATA, _bid(over), sealed)
    # The same path as the repository takes it, sealed by the real code.
    if declared:
        real = envelope.seal(KEYS.data_key, BlobKind.DATA, _bid(over), over)
        with pytest.raises(IntegrityError, match="oversized plaintext"):
            _open(BlobKind.DATA, _bid(over), real)


# ---------------------------------------------------------------- restore's own name check


def _hostile_cases(repo: Repository) -> list[TreeEntry]:
    inner = repo.save_tree([TreeEntry(b"escaped.txt", EntryType.FILE, 0o644, 0, 0, ())])
    payload = repo.save(BlobKind.DATA, b"written through a hostile name")
    repo.finish()
    chunks = (payload,)
    size = len(b"written through a hostile name")
    return [
        TreeEntry(b"..", EntryType.DIR, 0o755, 0, subtree=inner),
        TreeEntry(b".", EntryType.DIR, 0o755, 0, subtree=inner),
        TreeEntry(b"link/escaped.txt", EntryType.FILE, 0o644, 0, size, chunks),
        TreeEntry(b"link/../../escaped.txt", EntryType.FILE, 0o644, 0, size, chunks),
        TreeEntry(b"", EntryType.FILE, 0o644, 0, size, chunks),
        TreeEntry(b"nul\0name", EntryType.FILE, 0o644, 0, size, chunks),
        TreeEntry(b"..", EntryType.SYMLINK, 0o777, 0, target=b"/etc/passwd"),
    ]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", range(7))
def test_restore_refuses_hostile_names_itself(repo: Repository, tmp_path: Path, case: int) -> None:
    """Entries that never went through the tree decoder (which checks names too) are
    refused by restore itself, and nothing lands outside the target."""
    entry = _hostile_cases(repo)[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "link").symlink_to(elsewhere)  # a path through it would leave the target
    before = _listing(tmp_path)
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    r = _Restorer(repo, Progress("restore", enabled=False))
    try:
        with pytest.raises(HostilePath):
            r.restore_into(fd, [], [entry])
    finally:
        r.close()
        os.close(fd)
    assert _listing(tmp_path) == before


# ---------------------------------------------------------------- refs


def _commit(ref: str, tree: BlobId, counter: int = 1, parents: tuple[BlobId, ...] = ()) -> Commit:
    return Commit("backup", tree, parents, ref, counter, 1, 1, "dev", "host")


def test_a_ref_pointing_at_another_refs_commit_is_refused(
    repo: Repository, remote: MemoryRemote, state: StateDB
) -> None:
    tree = repo.save_tree([])
    made = history.advance(
        refs.RefBook(remote, repo, state), "r-a", lambda head: _commit("r-a", tree)
    )
    # A hostile server copies ref A's commit into ref B, which this device never saw.
    remote.refs["r-b"] = Ref("r-b", made.id, 1)
    with pytest.raises(RollbackError, match="points at a commit of another ref"):
        refs.RefBook(remote, repo, state).head("r-b")
    assert state.seen("r-b") is None
    with pytest.raises(RollbackError):
        history.snapshots(refs.RefBook(remote, repo, state))


def test_backup_cas_gives_up_after_its_attempts(tmp_path: Path, state: StateDB) -> None:
    remote = AlwaysConflicting()
    repo = Repository(remote, KEYS)
    try:
        tree = repo.save_tree([])
        with pytest.raises(Conflict, match="kept changing"):
            history.advance(
                refs.RefBook(remote, repo, state), "r-x", lambda head: _commit("r-x", tree)
            )
    finally:
        repo.close()
    assert remote.update_calls == history.CAS_ATTEMPTS
    assert state.seen("r-x") is None  # nothing was agreed on


def test_sync_cas_gives_up_after_its_attempts(tmp_path: Path, state: StateDB) -> None:
    folder_path = tmp_path / "Folder"
    folder_path.mkdir()
    (folder_path / "a.txt").write_text("local change that never gets committed")
    remote = AlwaysConflicting()
    repo = Repository(remote, KEYS)
    try:
        folder = SyncState(state).add_folder("f", folder_path, engine.folder_ref(repo, "f"))
        with pytest.raises(Conflict, match="kept changing"):
            engine.run_pass(repo, remote, state, folder, engine.Device(1, "dev", "host"))
    finally:
        repo.close()
    assert remote.update_calls == refs.CAS_ATTEMPTS  # the one CAS loop: repo/refs.py
    # Nothing was agreed on, so the file still counts as a local change next time.
    assert SyncState(state).records("f") == {}
    assert (folder_path / "a.txt").read_text() == "local change that never gets committed"
