"""An AnySync FUSE mount inside what a backup or a sync folder covers is never entered
(reading it would download the repository to store it again): the real CLI against a
real server, with a real snapshot mount (`anysync mount`) inside the directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client import mounts
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import Client, Server


@pytest.fixture
def docs(tmp_path: Path) -> Iterator[Path]:
    """Docs/{a.txt, Snapshots/}; Snapshots is unmounted at the end whatever happens."""
    src = tmp_path / "Docs"
    (src / "Snapshots").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"backed up and synced")
    yield src
    subprocess.run(["fusermount3", "-uz", str(src / "Snapshots")], capture_output=True, check=False)


@requires_fuse
def test_backup_and_sync_leave_a_mount_inside_alone(
    server: Server, device_a: Client, docs: Path
) -> None:
    device_a.signup(server, "skip@example.org")
    device_a.run("backup", str(docs))  # something for the snapshot view to show
    mnt = docs / "Snapshots"
    device_a.run("mount", str(mnt))
    assert mounts.is_anysync_mount(mnt)
    assert os.listdir(mnt)  # the mount has content a walk would have read

    report = json.loads(device_a.run("backup", "--json", str(docs)).stdout)
    assert report["skipped"] == [{"path": str(mnt), "reason": "AnySync mount"}]
    assert (report["files"], report["partial"]) == (1, False)
    text = device_a.run("backup", str(docs)).stdout
    assert f"    {mnt} (AnySync mount)\n" in text

    refused = device_a.run("backup", str(mnt / "latest"), check=False)
    assert refused.returncode != 0
    assert "is in an AnySync mount; its files are in the repository" in refused.stderr

    device_a.run("sync", "add", str(docs))
    done = device_a.run("sync", "run")
    assert "warning: not syncing Snapshots: it is an AnySync mount" in done.stderr
    assert mounts.is_anysync_mount(mnt)  # nothing was moved or removed there
