"""The all-in-one image: supervisord runs SeaweedFS and anysync-server in one container."""

from __future__ import annotations

from pathlib import Path

from tests.containers import engine as eng
from tests.containers.device import Device
from tests.containers.engine import Engine
from tests.integration.harness import make_tree, snapshot_of


def test_appliance_serves_clients_through_both_published_ports(
    engine: Engine, appliance_image: str, tmp_path: Path
) -> None:
    port, s3_port = eng.free_port(), eng.free_port()
    volume = eng.new_name()
    container = engine.client.containers.run(
        appliance_image,
        name=eng.new_name(),
        detach=True,
        ports={"65065/tcp": ("127.0.0.1", port), "65064/tcp": ("127.0.0.1", s3_port)},
        volumes={volume: {"bind": "/data", "mode": "rw"}},
        environment={
            "ANYSYNC_PUBLIC_HOST": "127.0.0.1",
            "ANYSYNC_PUBLIC_PORT": str(port),
            "ANYSYNC_PUBLIC_S3_PORT": str(s3_port),
        },
    )
    try:
        eng.wait_healthy(container)
        invite, fingerprint = eng.welcome(eng.logs(container))
        source = tmp_path / "Music"
        make_tree(source, small_files=100, big_mib=4)
        laptop = Device(tmp_path / "laptop", f"127.0.0.1:{port}")
        laptop.signup("owner@example.org", invite, fingerprint)
        backup = laptop.backup(source)
        assert "through the server instead" not in backup.stderr  # straight to the store

        container.restart(timeout=60)
        eng.wait_healthy(container)
        laptop.restore(tmp_path / "restored")
        assert snapshot_of(tmp_path / "restored" / "Music") == snapshot_of(source)
        # Both programs ran under supervisord, which stopped them in order.
        assert "stopped: anysync-server" in eng.logs(container)
    finally:
        container.remove(force=True)
        engine.client.volumes.get(volume).remove(force=True)
