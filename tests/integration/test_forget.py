"""`anysync forget` and sync-folder retention against a real server (prune-design.md §5):
forgotten snapshots leave the listing and cannot be restored (with a message saying
when and by whom), kept ones restore byte for byte, and a device without the manage
right is refused before it writes anything."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.integration.harness import Client, Server, snapshot_of

EMAIL = "forget@example.org"


def snapshot_ids(client: Client) -> list[str]:
    return [s["id"] for s in json.loads(client.run("snapshots", "--json").stdout)]


def test_forget_by_policy_and_by_id(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Data"
    src.mkdir()
    device_a.signup(server, EMAIL)  # signup's device has the manage right
    rnd = random.Random(5)
    contents = []
    for i in range(4):
        (src / "notes.txt").write_text(f"version {i}\n" * (i + 1))
        (src / f"only-in-{i}.bin").write_bytes(rnd.randbytes(200_000))
        if i:
            (src / f"only-in-{i - 1}.bin").unlink()
        device_a.run("backup", str(src))
        contents.append(snapshot_of(src))
    ids = snapshot_ids(device_a)
    assert len(ids) == 4

    # A device that logged in has the write right only: refused, nothing written.
    device_b.login(server, EMAIL)
    refused = device_b.run("forget", "--keep-last", "1", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "forget needs the manage right" in refused.stderr
    assert "add-rights" in refused.stderr
    assert snapshot_ids(device_b) == ids
    # ... but it may look at what a policy would do
    dry = json.loads(device_b.run("forget", "--keep-last", "1", "--dry-run", "--json").stdout)
    assert [f["id"] for f in dry[0]["forget"]] == ids[2::-1] and dry[0]["edit"] is None

    empty = device_a.run("forget", check=False)
    assert empty.returncode == 2 and "at least one --keep-" in empty.stderr

    done = json.loads(device_a.run("forget", "--keep-last", "2", "--json").stdout)
    (ref,) = done
    assert [k["id"] for k in ref["keep"]] == [ids[3], ids[2]]
    assert [f["id"] for f in ref["forget"]] == [ids[1], ids[0]]
    assert ref["edit"] is not None and not ref["retired"]
    assert snapshot_ids(device_a) == ids[2:]
    assert snapshot_ids(device_b) == ids[2:]  # an edit by a manage device counts everywhere

    for client, forgotten in ((device_a, ids[0]), (device_b, ids[1])):
        proc = client.run("restore", forgotten[:12], "--target", str(tmp_path / "r"), check=False)
        assert proc.returncode == 7, proc.stderr
        assert f"snapshot {forgotten[:8]} was forgotten on " in proc.stderr
        assert proc.stderr.count("\n") == 1  # one clear line
        assert client.run("ls", forgotten, check=False).returncode == 7
    assert not (tmp_path / "r").exists()

    for i in (2, 3):
        target = tmp_path / f"restored-{i}"
        device_b.run("restore", ids[i], "--target", str(target))
        assert snapshot_of(target / "Data") == contents[i]
    target = tmp_path / "latest"
    device_b.run("restore", "latest", "--target", str(target))
    assert snapshot_of(target / "Data") == contents[3]

    # By ID; the newest snapshot may go too, and `latest` follows.
    out = device_a.run("forget", ids[3][:10]).stdout
    assert "forget 1" in out
    assert snapshot_ids(device_b) == [ids[2]]
    device_b.run("restore", "latest", "--target", str(tmp_path / "now"))
    assert snapshot_of(tmp_path / "now" / "Data") == contents[2]

    # Backing up again after a forget builds on the edit commit.
    (src / "later.txt").write_text("after the forget\n")
    device_a.run("backup", str(src))
    after = snapshot_ids(device_b)
    assert after[0] == ids[2] and len(after) == 2


def test_sync_folder_retention(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "Shared"
    folder.mkdir()
    device_a.signup(server, EMAIL)
    device_a.run("sync", "add", str(folder), "--name", "Shared")
    for i in range(3):
        (folder / "plan.txt").write_text(f"plan v{i}\n")
        device_a.run("sync", "run")

    def versions() -> list[str]:
        out = device_a.run("versions", "--json", str(folder / "plan.txt")).stdout
        return [v["version"] for v in json.loads(out)]

    assert len(versions()) == 3
    shown = device_a.run("sync", "retention", "Shared").stdout
    assert "Shared: keep all within 30d of the newest" in shown or "(the default)" in shown
    assert "(the default)" in shown

    # The default keeps every version of the last 30 days.
    device_a.run("forget", "--keep-last", "1")
    assert len(versions()) == 3

    device_b.login(server, EMAIL)
    refused = device_b.run("sync", "retention", "Shared", "--keep-last", "1", check=False)
    assert refused.returncode == 5 and "manage right" in refused.stderr

    device_a.run("sync", "retention", "Shared", "--keep-last", "1")
    assert "keep 1 last" in device_b.run("sync", "retention", "Shared").stdout
    doc = json.loads(device_b.run("sync", "retention", "Shared", "--json").stdout)
    assert doc == {"folder": "Shared", "policy": "keep 1 last", "default": False}
    result = json.loads(device_a.run("forget", "--keep-last", "1", "--json").stdout)
    (sync,) = [r for r in result if r["kind"] == "sync"]
    assert len(sync["forget"]) == 2
    assert len(versions()) == 1
    assert (folder / "plan.txt").read_text() == "plan v2\n"  # the current state stays

    # The folder keeps syncing on top of the edit commits.
    (folder / "plan.txt").write_text("plan v3\n")
    device_a.run("sync", "run")
    assert len(versions()) == 2
