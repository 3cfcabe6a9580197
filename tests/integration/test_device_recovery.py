"""Getting a device back (issue #16): logout and login again, login after the device was
revoked or the server got a new certificate, and device names. The real CLI and server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from anysync import tls
from tests.integration.harness import Client, Server

EMAIL = "again@example.org"


def _with_folder(client: Client, server: Server, tmp_path: Path) -> Path:
    """A signed-up device with one backup and one sync folder (state worth keeping)."""
    client.signup(server, EMAIL)
    folder = tmp_path / "Notes"
    folder.mkdir()
    (folder / "a.txt").write_text("kept\n")
    client.run("backup", str(folder))
    client.run("sync", "add", str(folder), "--name", "Notes")
    client.run("sync", "run")
    return folder


def _login(client: Client, server: Server, *extra: str, check: bool = True) -> str:
    proc = client.run(
        "login", "--server", server.address, "--email", EMAIL, *extra, check=check
    )  # fmt: skip
    return proc.stdout + proc.stderr


def _devices(client: Client) -> list[dict[str, object]]:
    out: list[dict[str, object]] = json.loads(client.run("devices", "--json").stdout)
    return out


def test_logout_revokes_forgets_the_keys_and_login_takes_the_home_back(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = _with_folder(device_a, server, tmp_path)
    device_b.login(server, EMAIL)
    old_id = device_a.device_id

    out = device_a.run("logout").stdout
    assert f"device #{old_id}" in out and "revoked" in out
    for secret in ("access.keys", "device.keys", "master.keys"):
        assert not (device_a.home / secret).exists(), secret
    assert (device_a.home / "state.db").exists()
    revoked = {d["id"]: d["revoked"] for d in _devices(device_b)}
    assert revoked[old_id] is True

    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 10 and "logged out" in proc.stderr and "anysync login" in proc.stderr
    # A new account on this home would inherit its sync state: refused.
    proc = device_a.run(
        "signup", "--server", server.address, "--email", "other@example.org",
        "--invite", server.invite(), "--fingerprint", server.fingerprint(), check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and EMAIL in proc.stderr
    proc = device_a.run(
        "login", "--server", server.address, "--email", "other@example.org", check=False
    )
    assert proc.returncode == 2 and EMAIL in proc.stderr

    # The same account again: no --fingerprint needed (the pinned certificate is known),
    # a new device, and the sync folder carries on from its state.
    assert "again" in _login(device_a, server)
    assert device_a.device_id != old_id
    assert len(device_a.snapshots()) == 1
    (folder / "b.txt").write_text("after\n")
    device_a.run("sync", "run")
    status = device_a.run("sync", "status").stdout
    assert "Notes" in status


def test_login_while_logged_in_says_logout_first(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, EMAIL)
    proc = device_a.run(
        "login", "--server", server.address, "--email", EMAIL, check=False
    )  # fmt: skip
    assert proc.returncode == 2 and "anysync logout" in proc.stderr


def test_revoking_this_device_asks_and_a_revoked_device_logs_in_again(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _with_folder(device_a, server, tmp_path)
    me = device_a.device_id
    proc = device_a.run("devices", "revoke", str(me), check=False)
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert device_a.run("snapshots").returncode == 0  # not revoked

    device_a.run("devices", "revoke", str(me), "--yes")
    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 5 and "log in again" in proc.stderr
    _login(device_a, server)
    assert device_a.device_id != me and len(device_a.snapshots()) == 1


def _new_certificate(server: Server) -> None:
    """The server reinstalled on the same data: a new key and certificate."""
    server.stop()
    key_pem, cert_pem = tls.generate_self_signed(["localhost", "127.0.0.1", socket.gethostname()])
    (server.home / "tls" / "server.key").write_bytes(key_pem)
    (server.home / "tls" / "server.crt").write_bytes(cert_pem)
    server.start()


def test_a_new_server_certificate_is_repinned_only_by_an_explicit_fingerprint(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _with_folder(device_a, server, tmp_path)
    old = device_a.run("devices").stdout  # works before
    assert old
    _new_certificate(server)

    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 4
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line: no gRPC log lines
    assert "login" in proc.stderr and "--fingerprint" in proc.stderr

    # Neither a prompt nor --trust-new re-pins a changed certificate.
    for extra in ((), ("--trust-new",)):
        proc = device_a.run(
            "login", "--server", server.address, "--email", EMAIL, *extra, check=False
        )  # fmt: skip
        assert proc.returncode == 4 and server.fingerprint() in proc.stderr
    out = _login(device_a, server, "--fingerprint", server.fingerprint())
    assert "certificate changed" in out
    assert len(device_a.snapshots()) == 1


def test_device_names(server: Server, device_a: Client, device_b: Client, tmp_path: Path) -> None:
    _with_folder(device_a, server, tmp_path)
    device_b.run(
        "login", "--server", server.address, "--email", EMAIL,
        "--fingerprint", server.fingerprint(), "--device-name", "kitchen-pi",
    )  # fmt: skip
    listed = {d["id"]: d for d in _devices(device_b)}
    assert listed[device_b.device_id]["name"] == "kitchen-pi"
    # Just logged in: seen now, not "never".
    assert "never" not in device_b.run("devices").stdout

    device_b.run("devices", "rename", str(device_a.device_id), "study laptop")
    table = device_b.run("snapshots").stdout
    assert "DEVICE" in table and "study laptop" in table

    for bad in ("", "x" * 65, "evil\x1b[2J"):
        proc = device_b.run("devices", "rename", str(device_a.device_id), bad, check=False)
        assert proc.returncode == 2 and "device name" in proc.stderr, bad
