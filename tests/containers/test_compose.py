"""compose.yaml for real: the server and an S3 store (SeaweedFS standing in for MinIO,
whose image cannot be pulled here), `up --wait`, a client round trip through the
published ports, and `down` then `up` keeping the data."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.containers import engine as eng
from tests.containers.device import Device
from tests.containers.engine import Engine
from tests.integration.harness import make_tree, snapshot_of

# What .env.example says to set for SeaweedFS.
SEAWEEDFS_COMMAND = (
    "mini -dir=/data -s3.port=9000 -ip.bind=0.0.0.0 -webdav=false -admin.ui=false "
    "-s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false"
)
SEAWEEDFS_HEALTHCHECK = (
    "python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:9000/healthz')\""
)


@dataclass
class Stack:
    engine: Engine
    project: str
    env_file: Path
    port: int
    s3_port: int

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = self.engine.env | {"DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}
        if ca := eng.extra_ca_certs():
            env["EXTRA_CA_CERTS"] = ca
        proc = subprocess.run(
            [
                *eng.compose_command(), "--project-directory", str(eng.REPO),
                "-p", self.project, "--env-file", str(self.env_file), *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return proc

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service).stdout


@pytest.fixture
def stack(engine: Engine, base_image: str, seaweedfs_image: str, tmp_path: Path) -> Iterator[Stack]:
    port, s3_port = eng.free_port(), eng.free_port()
    env_file = tmp_path / "compose.env"
    env_file.write_text(
        "ANYSYNC_S3_SECRET_KEY=compose-test-secret-0123456789\n"
        "ANYSYNC_PUBLIC_HOST=127.0.0.1\n"
        "ANYSYNC_BIND=127.0.0.1\n"
        f"ANYSYNC_PORT={port}\n"
        f"ANYSYNC_S3_PORT={s3_port}\n"
        f"ANYSYNC_IMAGE=localhost/{eng.PREFIX}:compose\n"
        f"BASE_IMAGE={base_image}\n"
        f"ANYSYNC_OBJECTSTORE_IMAGE={seaweedfs_image}\n"
        f"ANYSYNC_OBJECTSTORE_COMMAND={SEAWEEDFS_COMMAND}\n"
        f"ANYSYNC_OBJECTSTORE_HEALTHCHECK={SEAWEEDFS_HEALTHCHECK}\n"
    )
    stack = Stack(engine, eng.new_name(), env_file, port, s3_port)
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "30")


def test_compose_up_round_trip_then_down_and_up_keeps_the_data(
    stack: Stack, tmp_path: Path
) -> None:
    stack.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "300")
    invite, fingerprint = eng.welcome(stack.logs("anysync"))
    # The secret reaches the server as a file, and nowhere else.
    config = stack.compose("exec", "-T", "anysync", "cat", "/data/server.toml").stdout
    assert 'secret_key_file = "/run/secrets/s3_secret_key"' in config
    environment = stack.compose("exec", "-T", "anysync", "env").stdout
    assert "compose-test-secret" not in config + environment

    source = tmp_path / "Pictures"
    make_tree(source, small_files=100, big_mib=4)
    laptop = Device(tmp_path / "laptop", f"127.0.0.1:{stack.port}")
    laptop.signup("owner@example.org", invite, fingerprint)
    backup = laptop.backup(source)
    # The packs went straight to the object store, through its published port.
    assert "through the server instead" not in backup.stderr
    stored_locally = stack.compose("exec", "-T", "anysync", "find", "/data/objects", "-type", "f")
    assert stored_locally.stdout.strip() == ""
    laptop.restore(tmp_path / "restored")
    assert snapshot_of(tmp_path / "restored" / "Pictures") == snapshot_of(source)

    stack.compose("down", "--timeout", "30")  # the named volumes stay
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "300")
    assert "First invite" not in stack.logs("anysync")
    phone = Device(tmp_path / "phone", f"127.0.0.1:{stack.port}")
    phone.login("owner@example.org", fingerprint)
    phone.restore(tmp_path / "again")
    assert snapshot_of(tmp_path / "again" / "Pictures") == snapshot_of(source)
