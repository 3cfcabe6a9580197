"""The real Secret Service of keyring_service.py, through the real `keyring` package in
a child process (as the client will use it): a secret is stored and read back while the
keyring is unlocked; while it is locked, reading and storing fail at once with
KeyringLocked (no prompt can be shown, none is waited for); unlocked again, the secret
is still there. With no Secret Service at all, `keyring` says NoKeyringError. These are
the exceptions the client turns into its messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.keyring_service import (
    SecretService,
    keyring_service,
    secret_service,
    secret_service_unavailable,
)

__all__ = ["keyring_service"]  # the fixture, used by name below

SERVICE, USERNAME, SECRET = "anysync-test", "device-key", "s3cret-\N{KEY}"

# Reads {"op": "get" | "set", "secret": ...} on stdin (a secret is never in argv) and
# prints {"backend": ..., "value": ...} or {"backend": ..., "error": "module.Class: text"}.
CHILD = """
import json, sys, keyring
request = json.load(sys.stdin)
result = {"backend": type(keyring.get_keyring()).__module__}
try:
    if request["op"] == "set":
        keyring.set_password(request["service"], request["username"], request["secret"])
        result["value"] = None
    else:
        result["value"] = keyring.get_password(request["service"], request["username"])
except Exception as e:
    result["error"] = f"{type(e).__module__}.{type(e).__name__}: {e}"
print(json.dumps(result))
"""


def keyring_in_child(env: dict[str, str], op: str, secret: str = "") -> dict[str, str | None]:
    request = {"op": op, "service": SERVICE, "username": USERNAME, "secret": secret}
    # The timeout only stops a hung run (a prompt waited for); it is not what is tested.
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(request),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, str | None] = json.loads(proc.stdout)
    return result


def test_a_secret_is_kept_while_unlocked_and_refused_at_once_while_locked(
    keyring_service: SecretService,
) -> None:
    env = keyring_service.child_env()
    assert keyring_in_child(env, "set", SECRET) == {
        "backend": "keyring.backends.SecretService",
        "value": None,
    }
    assert keyring_in_child(env, "get")["value"] == SECRET

    keyring_service.lock()
    for op in ("get", "set"):
        assert keyring_in_child(env, op, "another") == {
            "backend": "keyring.backends.SecretService",
            "error": "keyring.errors.KeyringLocked: Failed to unlock the collection!",
        }
    assert keyring_service.is_locked()  # the refused unlock prompt left it locked

    keyring_service.unlock()
    assert keyring_in_child(env, "get")["value"] == SECRET  # the locked "set" changed nothing


def test_without_a_secret_service_keyring_says_no_keyring(tmp_path: Path) -> None:
    reason = secret_service_unavailable()
    if reason is not None:
        pytest.skip(reason)
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # No bus listens there, as on a server with no desktop session.
    env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={runtime_dir / 'bus'}"
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    result = keyring_in_child(env, "get")
    assert result["backend"] == "keyring.backends.fail", result
    assert str(result.get("error")).startswith("keyring.errors.NoKeyringError: "), result


def test_the_service_leaves_no_process_behind(tmp_path: Path) -> None:
    reason = secret_service_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with secret_service(tmp_path / "secret-service") as service:
        pids = [service.daemon_pid, service.bus_pid]
        for pid in pids:
            os.kill(pid, 0)  # running
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not service.runtime_dir.exists()  # the bus socket's directory
