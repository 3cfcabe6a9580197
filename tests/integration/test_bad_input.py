"""Bad input gets a clear message, a non-zero exit code, and loses nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client.home import ClientHome
from anysync.client.keys import MasterKeys
from anysync.client.remote import Remote
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry, encode
from anysync.client.statedb import StateDB
from anysync.types import BlobKind
from tests.integration.harness import Client, Server


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real small or read-only file system (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def simple_backup(client: Client, server: Server, tmp_path: Path, email: str) -> Path:
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    client.signup(server, email)
    client.run("backup", str(src))
    return src


def test_wrong_password_login_writes_nothing(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    simple_backup(device_a, server, tmp_path, "pw@example.org")
    proc = device_b.run(
        "login", "--server", server.address, "--email", "pw@example.org",
        "--fingerprint", server.fingerprint(), password="not the password", check=False,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "wrong e-mail or password" in proc.stderr
    assert not device_b.home.exists() or not any(device_b.home.iterdir())
    # Unknown e-mail: the same answer, so accounts cannot be enumerated.
    proc = device_b.run(
        "login", "--server", server.address, "--email", "nobody@example.org",
        "--fingerprint", server.fingerprint(), check=False,
    )  # fmt: skip
    assert proc.returncode == 3 and "wrong e-mail or password" in proc.stderr


def test_wrong_password_locally(server: Server, device_a: Client, tmp_path: Path) -> None:
    simple_backup(device_a, server, tmp_path, "pw2@example.org")
    # Only passwd asks for the password now (other commands open device.keys).
    proc = device_a.run("passwd", password="nope", check=False, env={"ANYSYNC_NEW_PASSWORD": "x"})
    assert proc.returncode == 3 and proc.stderr.strip() == "anysync: error: wrong password"


def test_failed_logins_are_rate_limited(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    simple_backup(device_a, server, tmp_path, "rl@example.org")
    codes = [
        device_b.run(
            "login", "--server", server.address, "--email", "rl@example.org",
            "--trust-new", password=f"guess {i}", check=False,
        ).returncode
        for i in range(7)
    ]  # fmt: skip
    assert codes[0] == 3
    assert codes[-1] == 5  # too many failed logins
    proc = device_b.run(
        "login", "--server", server.address, "--email", "rl@example.org", "--trust-new", check=False
    )
    assert proc.returncode == 5 and "too many" in proc.stderr


def test_wrong_fingerprint_is_refused(server: Server, device_a: Client) -> None:
    proc = device_a.run(
        "signup", "--server", server.address, "--email", "fp@example.org",
        "--invite", server.invite(), "--fingerprint", "ab" * 32, check=False,
    )  # fmt: skip
    assert proc.returncode == 4  # README: 4 is "certificate mismatch"
    assert "fingerprint" in proc.stderr and server.fingerprint() in proc.stderr
    assert not (device_a.home / "config.json").exists()


def test_no_terminal_and_no_fingerprint_asks_for_one(server: Server, device_a: Client) -> None:
    proc = device_a.run(
        "signup",
        "--server",
        server.address,
        "--email",
        "tty@example.org",
        "--invite",
        "x",
        check=False,
    )
    assert proc.returncode == 2 and "--fingerprint" in proc.stderr


def test_server_down(server: Server, device_a: Client, tmp_path: Path) -> None:
    simple_backup(device_a, server, tmp_path, "down@example.org")
    server.stop()
    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 4
    assert "cannot reach the server" in proc.stderr
    proc = Client(tmp_path / "new").run(
        "login",
        "--server",
        server.address,
        "--email",
        "down@example.org",
        "--trust-new",
        check=False,
    )
    assert proc.returncode == 4 and "cannot reach the server" in proc.stderr


def test_target_not_writable(server: Server, device_a: Client, tmp_path: Path) -> None:
    simple_backup(device_a, server, tmp_path, "ro@example.org")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = device_a.run("restore", "latest", "--target", str(blocker / "sub"), check=False)
    assert proc.returncode == 2 and "cannot write to the target directory" in proc.stderr
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        proc = device_a.run("restore", "latest", "--target", str(ro), check=False)
        assert proc.returncode == 2
        assert "cannot write to the target directory" in proc.stderr and "Read-only" in proc.stderr


def test_disk_full_while_restoring(server: Server, device_a: Client, tmp_path: Path) -> None:
    simple_backup(device_a, server, tmp_path, "full@example.org")
    with tmpfs(tmp_path / "small", "size=1m") as small:
        proc = device_a.run("restore", "latest", "--target", str(small), check=False)
        assert proc.returncode == 12, proc.stderr
        assert "no space left" in proc.stderr
        assert not (small / "Docs" / "big.bin").exists()  # never a partial file
        assert not list(small.rglob(".anysync-tmp-*"))
    # With room, the same restore succeeds: nothing was lost.
    device_a.run("restore", "latest", "--target", str(tmp_path / "roomy"))
    assert (tmp_path / "roomy" / "Docs" / "a.txt").read_text() == "hello\n"


def test_corrupted_local_state(server: Server, device_a: Client, tmp_path: Path) -> None:
    src = simple_backup(device_a, server, tmp_path, "state@example.org")
    (device_a.home / "state.db").write_bytes(b"this is not sqlite" * 100)
    proc = device_a.run("backup", str(src))
    assert "moved it to" in proc.stderr  # rebuilt, with a warning
    (device_a.home / "config.json").write_text("{not json")
    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 10 and "anysync login" in proc.stderr
    # Nothing is lost: a fresh login recovers every snapshot.
    fresh = Client(tmp_path / "fresh")
    fresh.login(server, "state@example.org")
    fresh.run("restore", "latest", "--target", str(tmp_path / "back"))
    assert (tmp_path / "back" / "Docs" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_restore_never_writes_through_an_existing_symlink(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    simple_backup(device_a, server, tmp_path, "link@example.org")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "Docs").symlink_to(outside)
    proc = device_a.run("restore", "latest", "--target", str(target), check=False)
    assert proc.returncode == 11
    assert "symlink" in proc.stderr
    assert list(outside.iterdir()) == []


def _publish_hostile_tree(client: Client, name: bytes) -> None:
    """Play a malicious writer: a validly encrypted tree whose entry name is hostile."""
    home = ClientHome(client.home)
    keys: MasterKeys = home.unlock_with_password(client.password)
    remote: Remote = home.remote()
    repo = Repository(remote, keys)
    state = StateDB(home.state_path)
    try:
        placeholder = b"P" * len(name)
        raw = encode([TreeEntry(placeholder, EntryType.FILE, 0o644, 0, 0, ())]).replace(
            placeholder, name
        )
        root = repo.save(BlobKind.TREE, raw)
        ref = "r-" + "0" * 32

        def make(head: history.Snapshot | None) -> Commit:
            return Commit("backup", root, (), ref, 1, 2_000_000_000_000_000_000, 1, "evil", "evil")

        history.advance(RefBook(remote, repo, state), ref, make)
    finally:
        repo.close()
        state.close()
        remote.close()


@pytest.mark.parametrize("name", [b"..", b"../../escape", b"/etc/passwd", b"a\0b"])
def test_hostile_names_from_the_repository_are_refused(
    server: Server, device_a: Client, tmp_path: Path, name: bytes
) -> None:
    simple_backup(device_a, server, tmp_path, "hostile@example.org")
    _publish_hostile_tree(device_a, name)
    target = tmp_path / "deep" / "target"
    proc = device_a.run("restore", "latest", "--target", str(target), check=False)
    assert proc.returncode == 6, proc.stderr
    assert "hostile" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["target"]
    assert list(target.iterdir()) == []
