"""anysync-setup, the role's first-start program, run directly: secrets made once and
private, server.toml from the role's settings and a user's anysync.toml, a broken user
file ignored rather than fatal, and nothing changed on a second start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.ansible.targets import ANSIBLE_DIR, BIN

SETUP = ANSIBLE_DIR / "roles" / "anysync_server" / "files" / "anysync-setup"

BASE = """\
version = 1
listen = "0.0.0.0:65065"
registration = "invite"
[storage]
default_quota = "0"
kind = "s3"
endpoint = "http://127.0.0.1:65064"
bucket = "anysync"
secret_key_file = "s3.secret"
[log]
format = "text"
level = "info"
"""


def _setup(tmp: Path, user_toml: str | None = None) -> subprocess.CompletedProcess[str]:
    (tmp / "server.toml").write_text(BASE)
    user = tmp / "boot" / "anysync.toml"
    if user_toml is not None:
        user.parent.mkdir(exist_ok=True)
        user.write_text(user_toml)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "ANYSYNC_VENV": str(BIN.parent),
        "ANYSYNC_SERVER_HOME": str(tmp / "data" / "server"),
        "ANYSYNC_BASE_CONFIG": str(tmp / "server.toml"),
        "ANYSYNC_USER_CONFIG": str(user),
        "ANYSYNC_OBJECTSTORE_KIND": "seaweedfs",
        "ANYSYNC_OBJECTSTORE_DIR": str(tmp / "data" / "objectstore"),
        "ANYSYNC_OBJECTSTORE_PORT": "65064",
    }
    return subprocess.run(
        [sys.executable, str(SETUP)], env=env, capture_output=True, text=True, check=True
    )


def test_first_start_makes_private_secrets_and_a_valid_config(tmp_path: Path) -> None:
    out = _setup(tmp_path).stdout
    assert "initialised the server home" in out and "generated the object store" in out
    home, store = tmp_path / "data" / "server", tmp_path / "data" / "objectstore"
    for secret in (home / "s3.secret", store / "credentials.json", store / "s3.json"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    config = tomllib.loads((home / "server.toml").read_text())
    keys = json.loads((store / "credentials.json").read_text())
    assert config["storage"]["access_key"] == keys["access_key"]
    assert (home / "s3.secret").read_text().strip() == keys["secret_key"]
    identities = json.loads((store / "s3.json").read_text())["identities"]
    assert identities[0]["credentials"][0]["secretKey"] == keys["secret_key"]
    assert identities[1] == {"name": "anonymous", "actions": []}
    assert config["storage"]["public_endpoint"].endswith(":65064")


def test_second_start_changes_nothing(tmp_path: Path) -> None:
    _setup(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert "changed" not in _setup(tmp_path).stdout
    after = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert before == after


def test_a_users_anysync_toml_is_merged_over_the_settings(tmp_path: Path) -> None:
    user = 'registration = "closed"\n[storage]\npublic_endpoint = "http://nas.lan:65064"\n'
    out = _setup(tmp_path, user).stdout
    assert "changed: wrote server.toml" in out
    config = tomllib.loads((tmp_path / "data" / "server" / "server.toml").read_text())
    assert config["registration"] == "closed"
    assert config["storage"]["public_endpoint"] == "http://nas.lan:65064"
    assert config["storage"]["bucket"] == "anysync"  # the rest stays


def test_a_broken_anysync_toml_is_ignored_with_a_warning(tmp_path: Path) -> None:
    proc = _setup(tmp_path, 'registraton = "open"\n')
    assert "ignoring" in proc.stderr and "registraton" in proc.stderr
    config = tomllib.loads((tmp_path / "data" / "server" / "server.toml").read_text())
    assert config["registration"] == "invite"
