"""`anysync drive` as a user meets it: what list and status print, and one clear line
for every mistake (nothing mounted, nothing lost)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.drive import mounted, share_folder
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import Client, Server

pytestmark = requires_fuse


def test_list_status_and_mistakes(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    share_folder(server, device_a, device_b, folder)
    assert "no drives" in device_b.run("drive", "list").stdout

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    refused = device_b.run("drive", "mount", "docs", str(busy), check=False)
    assert refused.returncode == 2 and "is not empty" in refused.stderr
    assert (busy / "x").read_text() == "x"
    # A folder is a drive or a sync folder on one device, not both.
    own = device_a.run("drive", "mount", "docs", str(tmp_path / "a-drive"), check=False)
    assert own.returncode == 2 and "is a sync folder on this device" in own.stderr

    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        listed = device_b.run("drive", "list").stdout
        assert "docs" in listed and str(mnt) in listed and "online" in listed
        again = device_b.run("drive", "mount", "docs", str(mnt), check=False)
        assert again.returncode == 2 and "already mounted" in again.stderr
        state = device_b.run("drive", "status", str(mnt / "sub")).stdout
        assert state.split() == ["online", str(mnt / "sub" / "a.txt")]
        assert json.loads(device_b.run("drive", "status").stdout)["name"] == "docs"
        outside = device_b.run("pin", str(tmp_path), check=False)
        assert outside.returncode == 2 and "is not in a drive" in outside.stderr
        missing = device_b.run("evict", str(mnt / "nothing-here"), check=False)
        assert missing.returncode != 0 and "does not exist in the drive" in missing.stderr
        joined = device_b.run(
            "sync", "add", str(tmp_path / "b-docs"), "--name", "docs", check=False
        )
        assert joined.returncode == 2 and "is a drive on this device" in joined.stderr
    assert "not mounted" in device_b.run("drive", "list").stdout
    unknown = device_b.run("drive", "umount", str(tmp_path / "elsewhere"), check=False)
    assert unknown.returncode == 2 and "is not a drive of this device" in unknown.stderr
    assert not os.listdir(mnt)  # unmounted: the empty mount point is left
