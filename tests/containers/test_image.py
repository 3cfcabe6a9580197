"""The server image: what it declares, and a client backing up through its port."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.errors import ContainerError
from docker.models.containers import Container

from tests.containers import engine as eng
from tests.containers.device import Device
from tests.containers.engine import Engine
from tests.integration.harness import make_tree, snapshot_of


@pytest.fixture
def volume(engine: Engine) -> Iterator[str]:
    name = eng.new_name()
    engine.client.volumes.create(name)
    try:
        yield name
    finally:
        # Containers still using it, if the test failed before removing them.
        for container in engine.client.containers.list(all=True, filters={"name": eng.PREFIX}):
            if any(m.get("Name") == name for m in container.attrs.get("Mounts", [])):
                container.remove(force=True)
        engine.client.volumes.get(name).remove(force=True)


def test_image_runs_as_a_user_with_a_health_check_labels_and_a_data_volume(
    engine: Engine, server_image: str
) -> None:
    config = engine.client.images.get(server_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    # From the engine's command line: podman 4.3's Docker API leaves the health check out.
    inspected = engine.cli(
        "image", "inspect", "--format", "{{json .Config.Healthcheck}}", server_image
    )
    assert json.loads(inspected.stdout)["Test"] == ["CMD", "anysync-server", "health"]
    assert "/data" in config["Volumes"]
    assert "65065/tcp" in config["ExposedPorts"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "AnySync server"
    assert labels["org.opencontainers.image.licenses"] == "AGPL-3.0-or-later"
    assert labels["org.opencontainers.image.version"]


def test_client_backs_up_and_restores_through_the_published_port_across_restarts(
    engine: Engine, server_image: str, volume: str, tmp_path: Path
) -> None:
    port = eng.free_port()

    def start() -> Container:
        container = engine.client.containers.run(
            server_image,
            name=eng.new_name(),
            detach=True,
            ports={"65065/tcp": ("127.0.0.1", port)},
            volumes={volume: {"bind": "/data", "mode": "rw"}},
            environment={"ANYSYNC_PUBLIC_HOST": "127.0.0.1", "ANYSYNC_PUBLIC_PORT": str(port)},
        )
        eng.wait_healthy(container)
        return container

    container = start()
    first_start = eng.logs(container)
    invite, fingerprint = eng.welcome(first_start)
    assert f"anysync signup --server 127.0.0.1:{port} " in first_start

    source = tmp_path / "Documents"
    make_tree(source, small_files=200, big_mib=4)
    laptop = Device(tmp_path / "laptop", f"127.0.0.1:{port}")
    laptop.signup("owner@example.org", invite, fingerprint)
    laptop.backup(source)
    laptop.restore(tmp_path / "restored")
    assert snapshot_of(tmp_path / "restored" / "Documents") == snapshot_of(source)

    # SIGTERM reaches the server, which stops by itself: exit status 0, not 137 from the
    # engine's SIGKILL after the 30 s timeout. And the data stays.
    container.stop(timeout=30)
    container.reload()
    state = container.attrs["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
    lines = eng.logs(container).splitlines()
    signalled = [i for i, line in enumerate(lines) if "SIGTERM received; stopping" in line]
    assert signalled, lines[-20:]
    assert any(line.endswith(": stopped") for line in lines[signalled[-1] :]), lines[-20:]
    container.start()
    eng.wait_healthy(container)
    assert eng.logs(container).count("First invite") == 1  # only on the first start

    # A new container on the same volume: the same account, certificate and data.
    container.remove(force=True)
    container = start()
    assert "First invite" not in eng.logs(container)
    phone = Device(tmp_path / "phone", f"127.0.0.1:{port}")
    phone.login("owner@example.org", fingerprint)
    phone.restore(tmp_path / "again")
    assert snapshot_of(tmp_path / "again" / "Documents") == snapshot_of(source)
    container.remove(force=True)


def test_environment_and_a_mounted_file_configure_the_server(
    engine: Engine, server_image: str, volume: str, tmp_path: Path
) -> None:
    mounted = tmp_path / "server.toml"
    mounted.write_text('version = 1\nregistration = "open"\n[log]\nlevel = "debug"\n')
    output = engine.client.containers.run(
        server_image,
        ["sh", "-c", "/usr/local/lib/anysync/entrypoint.sh prepare >&2 && cat /data/server.toml"],
        name=eng.new_name(),
        remove=True,
        stderr=False,
        volumes={
            volume: {"bind": "/data", "mode": "rw"},
            str(mounted): {"bind": "/config/server.toml", "mode": "ro"},
        },
        environment={
            "ANYSYNC_REGISTRATION": "closed",
            "ANYSYNC_S3_ENDPOINT": "http://objectstore:9000",
            "ANYSYNC_S3_BUCKET": "backups",
            "ANYSYNC_S3_ACCESS_KEY": "anysync",
            "ANYSYNC_S3_SECRET_KEY_FILE": "/run/secrets/s3_secret_key",
            "ANYSYNC_S3_PUBLIC_ENDPOINT": "http://myserver.lan:65064",
            "ANYSYNC_LOG_FORMAT": "json",
        },
    )
    config = tomllib.loads(output.decode())
    assert config["registration"] == "closed"  # the variable wins over the file
    assert config["log"] == {"level": "debug", "format": "json"}  # the file's, and the variable's
    assert config["storage"] == {
        "kind": "s3",
        "endpoint": "http://objectstore:9000",
        "bucket": "backups",
        "access_key": "anysync",
        "secret_key_file": "/run/secrets/s3_secret_key",
        "public_endpoint": "http://myserver.lan:65064",
    }

    # A wrong value stops the container at once, saying what is wrong.
    with pytest.raises(ContainerError) as failed:
        engine.client.containers.run(
            server_image,
            name=eng.new_name(),
            remove=True,
            volumes={volume: {"bind": "/data", "mode": "rw"}},
            environment={"ANYSYNC_REGISTRATION": "sometimes"},
        )
    assert failed.value.exit_status == 2
    assert "registration = 'sometimes'" in failed.value.stderr.decode()
