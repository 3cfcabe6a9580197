"""Zero knowledge, tampering, isolation between users, revocation, hostile repositories."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from anysync.client import keys as keys_mod
from anysync.client.home import ClientHome
from anysync.client.remote import Remote
from anysync.client.repo import envelope
from anysync.client.repo.pack import PackedBlob
from anysync.errors import AuthError, NotFound
from anysync.types import BlobId, BlobKind, PackId
from tests.integration.harness import Client, Server, make_tree


@pytest.fixture
def server(any_server: Server) -> Server:
    """The foundation suite runs on the local store and again on S3 (presigned URLs)."""
    return any_server


def unlock(client: Client) -> keys_mod.MasterKeys:
    return ClientHome(client.home).unlock_with_password(client.password)


def remote_of(client: Client) -> Remote:
    return ClientHome(client.home).remote()


def blob_rows(server: Server) -> list[tuple[bytes, bytes, int, int]]:
    with sqlite3.connect(server.home / "metadata.db") as db:
        return db.execute("SELECT blob_id, pack_id, offset, length FROM blob_locations").fetchall()


def test_server_holds_no_names_plaintext_password_or_keys(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "TopSecretFolder"
    make_tree(src, small_files=50, big_mib=1)
    (src / "diary-entry-2026.txt").write_text("the launch codes are 0000 0000 0000\n" * 100)
    device_a.signup(server, "zk@example.org")
    device_a.run("backup", str(src))
    master = unlock(device_a)
    forbidden = {
        "folder name": b"TopSecretFolder",
        "file name": b"diary-entry-2026",
        "unicode name": "Ünïcødé ☃ 目录".encode(),
        "deep name": b"deep.txt",
        "plaintext": b"the launch codes are",
        "plaintext utf-8": "zażółć gęślą jaźń".encode(),
        "password": device_a.password.encode(),
        "data key": master.data_key,
        "id key": master.id_key,
        "box key": master.box_secret,
        "source path": str(tmp_path).encode(),
    }
    files = server.stored_files()
    assert len(blob_rows(server)) > 50  # the backup is really stored
    for path in files:
        content = path.read_bytes()
        for what, needle in forbidden.items():
            assert needle not in content, f"{what} found in {path}"


def test_tampered_object_is_refused_naming_the_file(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Docs"
    src.mkdir()
    victim = b"this file will be tampered with\n" * 10
    (src / "victim.txt").write_bytes(victim)
    (src / "bystander.txt").write_text("still fine\n")
    device_a.signup(server, "tamper@example.org")
    device_a.run("backup", str(src))
    bid = envelope.blob_id(unlock(device_a).id_key, victim)
    row = next(r for r in blob_rows(server) if r[0] == bid.raw)
    data = bytearray(server.read_object(row[1]))
    data[row[2] + row[3] // 2] ^= 0x01
    server.write_object(row[1], bytes(data))

    device_b.login(server, "tamper@example.org")
    target = tmp_path / "out"
    proc = device_b.run("restore", "latest", "--target", str(target), check=False)
    assert proc.returncode == 11, proc.stderr
    assert "Docs/victim.txt" in proc.stderr
    assert "tamper" in proc.stderr
    assert not (target / "Docs" / "victim.txt").exists()
    assert (target / "Docs" / "bystander.txt").read_text() == "still fine\n"
    assert not [p for p in target.rglob(".anysync-tmp-*")]


def test_other_users_token_reaches_nothing(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Alice"
    make_tree(src, small_files=10, big_mib=1)
    device_a.signup(server, "alice@example.org")
    device_a.run("backup", str(src))
    alice_rows = blob_rows(server)
    alice = remote_of(device_a)
    alice_ref = alice.list_refs()[0]

    device_b.signup(server, "bob@example.org")
    bob = remote_of(device_b)
    ids = [BlobId(r[0]) for r in alice_rows]
    assert bob.find_blobs(ids) == {}
    for pack in {r[1] for r in alice_rows}:
        with pytest.raises(NotFound):
            bob.read_pack(PackId(pack), 0, 0)
    assert bob.list_refs() == []
    assert bob.get_ref(alice_ref.name) is None
    # Bob cannot point Alice's ref anywhere: the same name is his own, empty ref, and
    # it may only point at a commit Bob holds.
    with pytest.raises(NotFound):
        bob.update_ref(alice_ref.name, 0, alice_ref.commit_id)
    # Bob's uploads never land on Alice's packs: the server names packs itself.
    data = os.urandom(1000)
    entries = [PackedBlob(ids[0], BlobKind.DATA, 0, 1000)]
    bob_pack = bob.upload_pack(data, hashlib.sha256(data).digest(), entries)
    assert bob_pack.raw not in {r[1] for r in alice_rows}
    assert alice.get_ref(alice_ref.name) == alice_ref
    assert alice.find_blobs(ids[:1])[ids[0]].pack_id.raw == alice_rows[0][1]
    # Alice still restores byte for byte.
    device_a.run("restore", "latest", "--target", str(tmp_path / "check"))
    assert (tmp_path / "check" / "Alice" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    alice.close()
    bob.close()


def test_revoked_device_is_refused_on_every_call(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("a")
    device_a.signup(server, "rev@example.org")
    device_a.run("backup", str(src))
    device_b.login(server, "rev@example.org")
    b_id = ClientHome(device_b.home).config().device_id
    listing = device_a.run("devices").stdout
    assert str(b_id) in listing
    device_a.run("devices", "revoke", str(b_id))
    assert "revoked" in device_a.run("devices").stdout

    b = remote_of(device_b)
    a = remote_of(device_a)
    ref = a.list_refs()[0]
    some = BlobId(os.urandom(32))
    calls = {
        "find_blobs": lambda: b.find_blobs([some]),
        "read_pack": lambda: b.read_pack(PackId(os.urandom(16)), 0, 0),
        "upload_pack": lambda: b.upload_pack(b"x", hashlib.sha256(b"x").digest(), []),
        "list_refs": lambda: b.list_refs(),
        "get_ref": lambda: b.get_ref(ref.name),
        "update_ref": lambda: b.update_ref(ref.name, ref.version, ref.commit_id),
        "list_devices": lambda: b.list_devices(),
        "whoami": lambda: b.whoami(),
        "revoke_device": lambda: b.revoke_device(1),
    }
    for name, call in calls.items():
        with pytest.raises(AuthError):
            call()
            pytest.fail(f"{name} succeeded with a revoked token")
    proc = device_b.run("snapshots", check=False)
    assert proc.returncode == 5 and "revoked" in proc.stderr
    assert a.whoami().email == "rev@example.org"  # the other device is unaffected
    a.close()
    b.close()
