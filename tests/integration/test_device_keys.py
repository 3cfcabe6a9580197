"""The device key file: only signup, login and passwd take the account password.

Every other command opens device.keys. The harness makes scrypt fatal for those
commands (ANYSYNC_TESTONLY_FAULT=crypto.scrypt) and gives them no password, so every
integration test proves it; the tests here check the file itself, the home written by
an older anysync, and the opt-in passphrase (the keyring: test_device_keys_keyring.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests.integration.drive import daemon_pid, mounted, share_folder
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import Client, Server

PASSPHRASE = "a device passphrase"


def _signup_and_backup(server: Server, device: Client, tmp_path: Path) -> Path:
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    device.signup(server, "keys@example.org")
    device.run("backup", str(src))
    return src


def test_commands_run_without_password_or_scrypt(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _signup_and_backup(server, device_a, tmp_path)
    key_file = device_a.home / "device.keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.loads(key_file.read_text())["protection"] == "none"

    # No ANYSYNC_PASSWORD, scrypt fatal: the commands a user runs every day.
    device_a.run("snapshots")
    device_a.run("ls", "latest")
    device_a.run("restore", "latest", "--target", str(tmp_path / "r"))
    assert (tmp_path / "r" / "Docs" / "a.txt").read_text() == "hello"
    assert (
        device_a.run("keys", "status")
        .stdout.strip()
        .endswith("unprotected (mode 0600, like an SSH key without a passphrase)")
    )


def test_home_from_an_older_anysync_is_unlocked_once_with_the_password(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _signup_and_backup(server, device_a, tmp_path)
    (device_a.home / "device.keys").unlink()

    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 2 and "no password given" in proc.stderr, proc.stderr
    device_a.run("snapshots", password=device_a.password, env={"ANYSYNC_TESTONLY_FAULT": ""})
    assert (device_a.home / "device.keys").exists()
    device_a.run("snapshots")  # from now on without


def test_passphrase_protection(server: Server, device_a: Client, tmp_path: Path) -> None:
    _signup_and_backup(server, device_a, tmp_path)
    plain = json.loads((device_a.home / "device.keys").read_text())["keys"]
    device_a.run("keys", "protect", "passphrase", env={"ANYSYNC_NEW_DEVICE_PASSPHRASE": PASSPHRASE})

    text = (device_a.home / "device.keys").read_text()
    assert json.loads(text)["protection"] == "passphrase"
    assert plain not in text and plain[:32] not in text  # no key left in the clear

    # A passphrase is scrypt by the user's choice; these runs allow it.
    allow = {"ANYSYNC_TESTONLY_FAULT": ""}
    proc = device_a.run("snapshots", check=False, env=allow)
    assert proc.returncode == 2 and "ANYSYNC_DEVICE_PASSPHRASE" in proc.stderr, proc.stderr
    proc = device_a.run(
        "snapshots", check=False, env=allow | {"ANYSYNC_DEVICE_PASSPHRASE": "not it"}
    )
    assert proc.returncode == 3 and "wrong device passphrase" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    device_a.run("snapshots", env=allow | {"ANYSYNC_DEVICE_PASSPHRASE": PASSPHRASE})

    # A forgotten passphrase: the account password writes the file again.
    device_a.run("keys", "protect", "none", "--from-password")
    assert json.loads((device_a.home / "device.keys").read_text())["keys"] == plain
    device_a.run("snapshots")


def test_device_keys_of_another_account_are_refused(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    _signup_and_backup(server, device_a, tmp_path)
    device_b.run(
        "signup", "--server", server.address, "--email", "other@example.org",
        "--invite", server.invite(), "--fingerprint", server.fingerprint(),
    )  # fmt: skip
    (device_a.home / "device.keys").write_bytes((device_b.home / "device.keys").read_bytes())

    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 10 and "belongs to another account" in proc.stderr, proc.stderr


def test_a_corrupt_device_key_file_names_the_fix(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _signup_and_backup(server, device_a, tmp_path)
    (device_a.home / "device.keys").write_text("{not json")

    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 10, proc.stderr
    assert "--from-password" in proc.stderr and "Traceback" not in proc.stderr
    device_a.run("keys", "protect", "none", "--from-password")
    device_a.run("snapshots")


def _exposed(pid: int) -> bytes:
    return b"".join((Path(f"/proc/{pid}") / f).read_bytes() for f in ("cmdline", "environ"))


@requires_fuse
def test_background_mounts_get_the_passphrase_through_a_pipe(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    """The drive daemon and the snapshot mount live for days: the passphrase reaches them
    on stdin, never in their argv, environment or log."""
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    share_folder(server, device_a, device_b, folder)
    device_b.run("keys", "protect", "passphrase", env={"ANYSYNC_NEW_DEVICE_PASSPHRASE": PASSPHRASE})
    given = {"ANYSYNC_DEVICE_PASSPHRASE": PASSPHRASE, "ANYSYNC_TESTONLY_FAULT": ""}

    with mounted(device_b, "docs", tmp_path / "drive", env=given) as mnt:
        assert (mnt / "a.txt").read_text() == "a"
        assert PASSPHRASE.encode() not in _exposed(daemon_pid(device_b))
        assert PASSPHRASE.encode() not in (device_b.home / "drive" / "daemon.log").read_bytes()

    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    device_b.run("backup", str(folder), env=given)
    device_b.run("mount", str(snapshots), env=given)
    try:
        assert (snapshots / "latest" / "a-docs" / "a.txt").read_text() == "a"
        holders = [p for p in Path("/proc").glob("[0-9]*") if _serves(p, snapshots)]
        assert holders and all(PASSPHRASE.encode() not in _exposed(int(p.name)) for p in holders)
    finally:
        subprocess.run(["fusermount3", "-u", str(snapshots)], check=False)


def _serves(proc: Path, mountpoint: Path) -> bool:
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mount" in argv and os.fsencode(mountpoint) in argv
