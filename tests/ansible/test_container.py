"""The role over SSH against a podman container (a host without systemd), like
molecule's converge → idempotence → verify, then an upgrade that must keep the data."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.ansible import targets
from tests.ansible.roundtrip import check_restore, round_trip

pytestmark = pytest.mark.slow


def _inventory(path: Path, host: targets.SshTarget, variables: dict[str, object]) -> Path:
    hosts = {"anysync-box": host.inventory_vars()}
    # In "all": site.yml's controller play sees anysync_wheel too and builds none.
    path.write_text(json.dumps({"all": {"vars": variables}, "anysync_servers": {"hosts": hosts}}))
    return path


def _bumped_wheel(wheel: Path, dest: Path, version: str) -> Path:
    """The same code as another version: what an upgrade installs."""
    old = wheel.name.split("-")[1]
    dest.mkdir()
    new = dest / wheel.name.replace(old, version)
    old_info, new_info = f"anysync-{old}.dist-info", f"anysync-{version}.dist-info"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(new, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith((".dist-info/METADATA", ".dist-info/RECORD")):
                data = data.replace(f"Version: {old}".encode(), f"Version: {version}".encode())
                data = data.replace(old_info.encode(), new_info.encode())
            item.filename = item.filename.replace(old_info, new_info)
            out.writestr(item, data)
    return new


def test_role_converges_in_a_container_and_serves_clients(tmp_path: Path) -> None:
    targets.require_root_tools("podman", "debootstrap", "runc", "ssh-keygen")
    log = tmp_path / "ansible.log"
    wheel = targets.build_wheel(tmp_path / "dist")
    s3_port, grpc_port = targets.free_port(), targets.free_port()
    name = f"anysync-role-{uuid.uuid4().hex[:8]}"
    env_ssh = targets.SSH_ENV
    with targets.podman_env(tmp_path) as env:
        image = targets.podman_image_from(targets.sshd_rootfs_tarball(log), env, log)
        key = targets.ssh_key(tmp_path)
        with targets.podman_container(
            image, name, {s3_port: 65064, grpc_port: 65065}, env, log, key
        ) as host:

            def sh(*cmd: str) -> str:
                return targets.run(["podman", "exec", name, *cmd], env=env).stdout

            variables: dict[str, object] = {
                "anysync_wheel": str(wheel),
                "anysync_extra_ca_certs": targets.extra_ca_certs(),
                # Clients on the host reach the store through the published port.
                "anysync_public_endpoint": f"http://127.0.0.1:{s3_port}",
            }
            inventory = _inventory(tmp_path / "inventory.json", host, variables)
            playbook = targets.ANSIBLE_DIR / "site.yml"
            try:
                first = targets.ansible_playbook(inventory, playbook, log, env | env_ssh)
                assert first.failed == 0 and first.changed > 0

                second = targets.ansible_playbook(inventory, playbook, log, env | env_ssh)
                assert second.changed == 0, targets.changed_tasks(second.output)

                rules = sh("nft", "list", "table", "inet", "anysync")
                assert "tcp dport { 22, 65064, 65065 } accept" in rules
                assert "policy drop" in rules
                status = sh("/opt/anysync/libexec/anysync-appliance", "ctl", "status")
                assert status.count("RUNNING") >= 3, status  # store, server, listener

                fingerprint = sh("/usr/local/bin/anysync-server", "fingerprint").strip()
                invite = sh("/usr/local/bin/anysync-server", "invite", "create").strip()
                client = round_trip(tmp_path, f"127.0.0.1:{grpc_port}", fingerprint, invite)

                # An upgrade: a new version of the package; the data and the keys stay.
                secret_before = sh("sha256sum", "/var/lib/anysync/server/server.secret")
                variables["anysync_wheel"] = str(_bumped_wheel(wheel, tmp_path / "v2", "0.1.1"))
                _inventory(inventory, host, variables)
                upgrade = targets.ansible_playbook(inventory, playbook, log, env | env_ssh)
                assert upgrade.changed > 0
                assert "Version: 0.1.1" in sh("/opt/anysync/venv/bin/pip", "show", "anysync")
                assert sh("sha256sum", "/var/lib/anysync/server/server.secret") == secret_before
                assert sh("/usr/local/bin/anysync-server", "fingerprint").strip() == fingerprint
                shutil.rmtree(tmp_path / "restored")
                check_restore(client, tmp_path / "source", tmp_path / "restored")
            except BaseException:
                diag = subprocess.run(
                    ["podman", "exec", name, "sh", "-c",
                     "tail -n 60 /var/lib/anysync/logs/appliance.log; ls -la /var/lib/anysync"],
                    env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                print(f"--- appliance log ---\n{diag.stdout}{diag.stderr}")
                raise
