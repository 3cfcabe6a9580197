"""The role through Ansible's chroot connection into a bare debootstrapped Debian, in
image mode (how image-build/ uses it): nothing per-device may be left in the tree, a
second run changes nothing, and the tree then starts like a freshly flashed device:
secrets made on the spot, both services healthy, a client round trip from the host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.ansible import targets
from tests.ansible.roundtrip import round_trip

pytestmark = pytest.mark.slow


def test_role_in_image_mode_through_the_chroot_connection(tmp_path: Path) -> None:
    targets.require_root_tools("debootstrap", "unshare", "chroot")
    log = tmp_path / "ansible.log"
    root = tmp_path / "rootfs"
    targets.debian_rootfs(root, log)
    wheel = targets.build_wheel(tmp_path / "dist")
    # Ports of its own: the tree runs in the host's network namespace here.
    grpc_port, s3_port = targets.free_port(), targets.free_port()
    # SeaweedFS's internal ports: BASE..BASE+4 and BASE+10000..BASE+10003.
    seaweed_base = targets.free_port_range(5, twins=10000)
    variables = {
        "anysync_image_build": True,
        "anysync_wheel": str(wheel),
        "anysync_extra_ca_certs": targets.extra_ca_certs(),
        "anysync_server_port": grpc_port,
        "anysync_objectstore_port": s3_port,
        "anysync_public_endpoint": f"http://127.0.0.1:{s3_port}",
        "anysync_seaweedfs_base_port": seaweed_base,
    }
    hosts = {str(root): {"ansible_connection": "community.general.chroot"}}
    inventory = tmp_path / "inventory.json"
    # In "all": site.yml's controller play sees anysync_wheel too and builds none.
    inventory.write_text(
        json.dumps({"all": {"vars": variables}, "anysync_servers": {"hosts": hosts}})
    )
    playbook = targets.ANSIBLE_DIR / "site.yml"

    first = targets.ansible_playbook(inventory, playbook, log)
    assert first.failed == 0 and first.changed > 0
    second = targets.ansible_playbook(inventory, playbook, log)
    assert second.changed == 0, targets.changed_tasks(second.output)

    # Installed and enabled, but nothing generated and nothing running.
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "anysync.service").is_symlink()
    assert (wants / "anysync-firewall.service").is_symlink()
    assert not (root / "var/lib/anysync/server").exists()
    assert not (root / "var/lib/anysync/objectstore").exists()
    assert "tcp dport" in (root / "etc/anysync/anysync.nft").read_text()
    assert not _processes_in(root), "the image build left processes running in the tree"

    # First start, as on a device: secrets made now, both services healthy.
    with targets.boot_chroot(root, tmp_path / "appliance.log") as device:

        def healthy() -> bool:
            probe = subprocess.run(
                ["chroot", str(root), "/usr/local/bin/anysync-server", "health"],
                capture_output=True, check=False,
            )  # fmt: skip
            return probe.returncode == 0

        targets.wait_for(healthy, 180, "anysync-server to answer SERVING")
        assert any("supervisord" in c for c in _processes_in(root)), "the check above is blind"
        assert (root / "var/lib/anysync/server/tls/server.key").stat().st_mode & 0o077 == 0
        assert (root / "var/lib/anysync/objectstore/credentials.json").exists()
        fingerprint = device.admin("fingerprint").strip()
        invite = device.admin("invite", "create").strip()
        round_trip(tmp_path, f"127.0.0.1:{grpc_port}", fingerprint, invite)


def _processes_in(root: Path) -> list[str]:
    """Command lines of the processes whose root directory is `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "root") == str(root.resolve()):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found
