"""`anysync prune` against a real server (the harness's: no grace period, no minimum
pack age): forgotten data goes, kept snapshots restore byte for byte, and only a manage
device may prune."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.integration.harness import Client, Server, snapshot_of

MIB = 1024 * 1024


def test_prune_frees_what_only_a_forgotten_snapshot_held(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "prune@example.org")
    src = tmp_path / "Data"
    src.mkdir()
    rnd = random.Random(21)
    for i in range(8):
        (src / f"file-{i}.bin").write_bytes(rnd.randbytes(MIB))
    device_a.run("backup", str(src))
    first = device_a.snapshots()[-1]["id"]
    for i in range(0, 8, 2):
        (src / f"file-{i}.bin").unlink()
    device_a.run("backup", str(src))
    second = device_a.snapshots()[-1]["id"]
    kept = snapshot_of(src)

    # Nothing is forgotten yet: every pack is needed, so nothing goes.
    untouched = server.stored_pack_bytes()
    idle = json.loads(device_a.run("prune", "--json").stdout)
    assert idle["condemned_packs"] == 0 and server.stored_pack_bytes() == untouched

    device_a.run("forget", first)  # stores a small edit commit
    untouched = server.stored_pack_bytes()
    plan = json.loads(device_a.run("prune", "--dry-run", "--json").stdout)
    assert plan["repack_packs"] >= 1, plan  # the first backup's pack is half forgotten
    assert server.stored_pack_bytes() == untouched

    report = json.loads(device_a.run("prune", "--json").stdout)
    after = server.stored_pack_bytes()
    assert untouched - after >= 3.5 * MIB, (untouched, after, report)
    assert report["freed_bytes"] >= 3.5 * MIB
    assert report["uploaded_bytes"] > 0 and report["problems"] == []
    assert report["unused_bytes"] <= 0.05 * after

    assert [s["id"] for s in device_a.snapshots()] == [second]
    device_a.run("check", "--read-data")
    target = tmp_path / "restored"
    device_a.run("restore", second, "--target", str(target))
    assert snapshot_of(target / "Data") == kept

    # A second prune finds nothing more, and the human output says so.
    again = device_a.run("prune")
    assert "nothing to prune" in again.stdout


def test_only_a_manage_device_prunes(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "rights@example.org")
    device_b.login(server, "rights@example.org")
    src = tmp_path / "Data"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    device_b.run("backup", str(src))

    rights = {d["id"]: d["rights"] for d in json.loads(device_a.run("devices", "--json").stdout)}
    b = device_b.device_id
    assert rights == {device_a.device_id: "manage", b: "write"}
    table = device_a.run("devices").stdout
    assert "RIGHTS" in table and "manage" in table

    # No terminal to confirm with the password: exit 5, one line.
    refused = device_b.run("prune", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "manage" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert device_b.run("prune", "--dry-run", "--json").returncode == 0  # looking is fine

    device_a.run("devices", "append-only", str(b))
    refused = device_b.run("prune", check=False)
    assert refused.returncode == 5 and "append-only" in refused.stderr, refused.stderr

    device_a.run("devices", "add-rights", str(b), "manage")
    device_b.run("prune")
    device_a.run("devices", "set-rights", str(b), "write")
    rights = {d["id"]: d["rights"] for d in json.loads(device_a.run("devices", "--json").stdout)}
    assert rights[b] == "write"
