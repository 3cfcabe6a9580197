"""`anysync keys protect keyring` against a real Secret Service (gnome-keyring-daemon on
a private bus, keyring_service.py): the commands work while it is unlocked, and say in
one line what to do when it is locked, absent or hung; the home is left as it was."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.integration.harness import Client, Server
from tests.integration.keyring_service import SecretService, keyring_service

__all__ = ["keyring_service"]  # the fixture, used by name below


def _one_line(proc_stderr: str) -> str:
    lines = proc_stderr.strip().splitlines()
    assert len(lines) == 1, proc_stderr
    return lines[0]


def test_keyring_protected_home(
    server: Server, device_a: Client, tmp_path: Path, keyring_service: SecretService
) -> None:
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("kept")
    device_a.signup(server, "keyring@example.org")
    device_a.run("backup", str(src))
    plain = json.loads((device_a.home / "device.keys").read_text())["keys"]
    bus = keyring_service.env

    device_a.run("keys", "protect", "keyring", env=bus)
    on_disk = (device_a.home / "device.keys").read_text()
    assert json.loads(on_disk)["protection"] == "keyring" and plain not in on_disk
    assert "desktop keyring" in device_a.run("keys", "status").stdout

    # Unlocked: no password, no scrypt (the harness makes it fatal).
    device_a.run("restore", "latest", "--target", str(tmp_path / "r1"), env=bus)
    assert (tmp_path / "r1" / "Docs" / "a.txt").read_text() == "kept"

    keyring_service.lock()
    proc = device_a.run("snapshots", check=False, env=bus)
    assert proc.returncode == 3
    assert "keyring is locked" in _one_line(proc.stderr)
    assert (device_a.home / "device.keys").read_text() == on_disk
    keyring_service.unlock()
    device_a.run("snapshots", env=bus)

    # No Secret Service in this session (no bus): said, not a traceback.
    proc = device_a.run("snapshots", check=False, env={"DBUS_SESSION_BUS_ADDRESS": ""})
    assert proc.returncode == 3
    assert "no usable desktop keyring" in _one_line(proc.stderr)

    # A hung keyring daemon: the command gives up instead of hanging with it.
    os.kill(keyring_service.daemon_pid, signal.SIGSTOP)
    try:
        proc = device_a.run(
            "snapshots", check=False, env=bus | {"ANYSYNC_TESTONLY_KEYRING_TIMEOUT": "2"}
        )
    finally:
        os.kill(keyring_service.daemon_pid, signal.SIGCONT)
    assert proc.returncode == 3
    assert "did not answer" in _one_line(proc.stderr)

    # Back to a plain file: the keys are the same, and the entry is no longer needed.
    device_a.run("keys", "protect", "none", env=bus)
    assert json.loads((device_a.home / "device.keys").read_text())["keys"] == plain
    device_a.run("snapshots")
