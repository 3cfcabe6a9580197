"""What the server learns from stored lengths (issue 11, trust case 6), and that
repositories written before envelope version 2 still restore."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anysync.cli.progress import Progress
from anysync.client.backup import Origin, run_backup
from anysync.client.home import ClientHome
from anysync.client.repo import envelope
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.types import BlobId, BlobKind
from tests.integration.harness import Client, Server, snapshot_of


def blob_lengths(server: Server) -> dict[bytes, int]:
    """blob ID → stored length, as the server records it (metadata.db, table blob_locations)."""
    with sqlite3.connect(server.home / "metadata.db") as db:
        return dict(db.execute("SELECT blob_id, length FROM blob_locations").fetchall())


def stored_version(server: Server, bid: bytes) -> int:
    """The first byte of a blob as stored in its pack: its envelope version."""
    with sqlite3.connect(server.home / "metadata.db") as db:
        pack_id, offset = db.execute(
            "SELECT pack_id, offset FROM blob_locations WHERE blob_id = ?", (bid,)
        ).fetchone()
    return server.read_object(pack_id)[offset]


def small_random_files(root: Path, count: int, seed: int) -> dict[str, bytes]:
    """`count` files of 1,000 to 1,049 random (incompressible) bytes, each size once."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    files = {f"f{i:02d}.bin": rnd.randbytes(1000 + i % 50) for i in range(count)}
    for name, content in files.items():
        (root / name).write_bytes(content)
    return files


def test_small_files_of_50_sizes_are_stored_with_at_most_2_lengths(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    files = small_random_files(tmp_path / "Small", 50, seed=6)
    device_a.signup(server, "sizes@example.org")
    device_a.run("backup", str(tmp_path / "Small"))
    id_key = ClientHome(device_a.home).unlock_with_password(device_a.password).id_key
    stored = blob_lengths(server)
    ids = [envelope.blob_id(id_key, content).raw for content in files.values()]
    assert all(i in stored for i in ids)  # each file is one chunk, one blob
    lengths = {stored[i] for i in ids}
    assert len(lengths) <= 2, sorted(lengths)


def seal_v1(
    data_key: bytes,
    kind: BlobKind,
    bid: BlobId,
    plaintext: bytes | memoryview,
    compress: bool = True,
) -> bytes:
    """The version-1 writer of docs/design.md §4.2, from the primitives: what clients
    before envelope version 2 stored. Never compresses (flags 0), which v1 allows."""
    header = bytes([1, kind, 0]) + os.urandom(32)
    material = HKDF(
        algorithm=hashes.SHA256(), length=44, salt=header[3:], info=b"anysync v1 blob"
    ).derive(data_key)
    return header + AESGCM(material[:32]).encrypt(material[32:], bytes(plaintext), header + bid.raw)


def backup_as_a_version_1_client(client: Client, src: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A backup through the real backup code and server, every blob (pack headers
    included) sealed in the version-1 layout. Returns the snapshot ID."""
    home = ClientHome(client.home)
    cfg = home.config()
    keys = home.unlock_with_password(client.password)
    remote = home.remote()
    repo = Repository(remote, keys)
    state = StateDB(home.state_path)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(envelope, "seal", seal_v1)
            origin = Origin(cfg.device_id, cfg.device_name, socket.gethostname())
            result = run_backup(
                repo, remote, state, [src], origin, Progress("backup", enabled=False)
            )
    finally:
        repo.close()
        state.close()
        remote.close()
    return result.snapshot.id.hex()


def test_a_repository_written_with_version_1_still_restores(
    server: Server,
    device_a: Client,
    device_b: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "Mixed"
    files = small_random_files(src, 10, seed=1)
    (src / "notes.txt").write_text("compressible notes\n" * 500)
    device_a.signup(server, "v1@example.org")
    old = backup_as_a_version_1_client(device_a, src, monkeypatch)
    before = snapshot_of(src)

    # The blobs on the server really are version 1: plaintext + 51 bytes, first byte 0x01.
    id_key = ClientHome(device_a.home).unlock_with_password(device_a.password).id_key
    stored = blob_lengths(server)
    v1_ids = [envelope.blob_id(id_key, content).raw for content in files.values()]
    assert [stored[i] for i in v1_ids] == [len(c) + 51 for c in files.values()]
    assert {stored_version(server, i) for i in v1_ids} == {1}

    # A current client adds to the same repository: new blobs are version 2, the
    # unchanged files keep their version-1 blobs (deduplicated by ID).
    (src / "f00.bin").write_bytes(b"changed by a current client" * 40)
    (src / "new.txt").write_text("added later\n")
    device_a.run("backup", str(src))
    after = blob_lengths(server)
    assert all(after[i] == stored[i] for i in v1_ids[1:])
    new = envelope.blob_id(id_key, b"changed by a current client" * 40).raw
    assert stored_version(server, new) == 2
    assert {stored_version(server, i) for i in v1_ids[1:]} == {1}

    device_b.login(server, "v1@example.org")
    device_b.run("restore", old, "--target", str(tmp_path / "old"))
    assert snapshot_of(tmp_path / "old" / "Mixed") == before
    device_b.run("restore", "latest", "--target", str(tmp_path / "latest"))
    assert snapshot_of(tmp_path / "latest" / "Mixed") == snapshot_of(src)
