"""The foundation end to end: real server process, real CLI, two devices, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.harness import Client, Server, make_tree, snapshot_of


@pytest.fixture
def server(any_server: Server) -> Server:
    """The foundation suite runs on the local store and again on S3 (presigned URLs)."""
    return any_server


def backup_json(client: Client, *paths: Path) -> dict[str, object]:
    return json.loads(client.run("backup", "--json", *map(str, paths)).stdout)


def test_restore_on_second_device_with_password_only(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Documents"
    make_tree(src)
    device_a.signup(server, "me@example.org")
    first = backup_json(device_a, src)
    assert first["files"] == 2000 + 6 and first["warnings"] == []
    expected = snapshot_of(src)

    device_b.login(server, "me@example.org")
    target = tmp_path / "restored"
    out = device_b.run("restore", "latest", "--target", str(target))
    assert "restored snapshot" in out.stdout
    assert snapshot_of(target / "Documents") == expected

    # Incremental: nothing changed → nothing read, only the new commit uploaded.
    second = backup_json(device_a, src)
    assert second["files_read"] == 0
    assert second["blobs_new"] == 1

    # A small change in the big file uploads only the chunks around it.
    big = src / "big.bin"
    data = bytearray(big.read_bytes())
    old_bytes = bytes(data)
    data[10_000_000:10_001_024] = os.urandom(1024)
    big.write_bytes(bytes(data))
    third = backup_json(device_a, src)
    assert third["files_read"] == 1
    assert int(str(third["bytes_added"])) < 6 * 1024 * 1024

    snaps = json.loads(device_b.run("snapshots", "--json").stdout)
    assert [s["id"] for s in snaps] == [first["snapshot"], second["snapshot"], third["snapshot"]]

    old_target = tmp_path / "old"
    device_b.run(
        "restore",
        str(first["snapshot"])[:10],
        "--target",
        str(old_target),
        "--include",
        "Documents/big.bin",
    )
    assert (old_target / "Documents" / "big.bin").read_bytes() == old_bytes
    assert not (old_target / "Documents" / "many").exists()
    new_target = tmp_path / "new"
    device_b.run("restore", "latest", "--target", str(new_target), "--include", "Documents/big.bin")
    assert (new_target / "Documents" / "big.bin").read_bytes() == bytes(data)


def test_ls_lists_snapshot_contents(server: Server, device_a: Client, tmp_path: Path) -> None:
    src = tmp_path / "Pictures"
    make_tree(src, small_files=5, big_mib=1)
    device_a.signup(server, "ls@example.org")
    device_a.run("backup", str(src))
    listing = json.loads(device_a.run("ls", "latest", "Pictures", "--json").stdout)
    names = {e["path"] for e in listing}
    assert "Pictures/Ünïcødé ☃ 目录" in names
    assert {"type": "symlink", "target": "a/b/c/d/deep.txt"}.items() <= next(
        e for e in listing if e["path"] == "Pictures/link-to-deep"
    ).items()
    text = device_a.run("ls", "latest", "Pictures/a", "-r").stdout
    assert "Pictures/a/b/c/d/deep.txt" in text


def test_two_paths_in_one_snapshot(server: Server, device_a: Client, tmp_path: Path) -> None:
    docs, pics = tmp_path / "Documents", tmp_path / "Pictures"
    docs.mkdir()
    pics.mkdir()
    (docs / "a.txt").write_text("a")
    (pics / "b.jpg").write_bytes(b"\xff\xd8" + os.urandom(5000))
    device_a.signup(server, "two@example.org")
    device_a.run("backup", str(docs), str(pics))
    target = tmp_path / "t"
    device_a.run("restore", "latest", "--target", str(target))
    assert (target / "Documents" / "a.txt").read_text() == "a"
    assert (target / "Pictures" / "b.jpg").read_bytes() == (pics / "b.jpg").read_bytes()


def test_password_change_reaches_every_device(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("before")
    device_a.signup(server, "pw@example.org")
    device_a.run("backup", str(src))
    device_b.login(server, "pw@example.org")
    before = (device_a.home / "master.keys").read_bytes()

    new = "a much better passphrase"
    device_a.run("passwd", env={"ANYSYNC_NEW_PASSWORD": new})
    after = (device_a.home / "master.keys").read_bytes()
    assert after != before
    device_a.run("snapshots")  # the data keys did not change: no password needed

    # Device B keeps working from its device keys (no password, no scrypt: the harness
    # makes scrypt fatal) and takes the server's new wrapping, for its own next passwd.
    device_b.run("restore", "latest", "--target", str(tmp_path / "r"))
    assert (tmp_path / "r" / "Docs" / "a.txt").read_text() == "before"
    assert (device_b.home / "master.keys").read_bytes() == after
    proc = device_b.run(
        "passwd",
        password="correct horse battery staple",
        env={"ANYSYNC_NEW_PASSWORD": "x"},
        check=False,
    )
    assert proc.returncode == 3 and "wrong password" in proc.stderr

    # A third device logs in with the new password only.
    third = Client(tmp_path / "device-c", password=new)
    third.login(server, "pw@example.org")
    assert (
        device_b.run(
            "login",
            "--server",
            server.address,
            "--email",
            "pw@example.org",
            "--trust-new",
            check=False,
        ).returncode
        == 2
    )  # already logged in; and the old password no longer logs in anywhere:
    fresh = Client(tmp_path / "device-d")
    assert (
        fresh.run(
            "login",
            "--server",
            server.address,
            "--email",
            "pw@example.org",
            "--trust-new",
            check=False,
        ).returncode
        == 3
    )


def test_large_file_restores_in_windows(server: Server, device_a: Client, tmp_path: Path) -> None:
    src = tmp_path / "Media"
    src.mkdir()
    big = os.urandom(45 * 1024 * 1024)
    (src / "movie.bin").write_bytes(big)
    device_a.signup(server, "large@example.org")
    device_a.run("backup", str(src))
    device_a.run("restore", "latest", "--target", str(tmp_path / "r"))
    assert (tmp_path / "r" / "Media" / "movie.bin").read_bytes() == big
