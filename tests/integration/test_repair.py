"""`anysync repair index` and `anysync repair snapshots` against a real server whose
operator damaged it (issue #13, prune-design.md §8). Faults are made as in
test_check.py: stop the server, edit metadata.db or lose an object, start it again."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from tests.integration.harness import Client, Server, snapshot_of

BIG = random.Random(3).randbytes(3 * 1024 * 1024)  # several chunks, in one pack


def back_up_twice(server: Server, client: Client, src: Path) -> list[dict[str, object]]:
    """Data/{docs/big.bin, small.txt}, then Data/later.txt added: two snapshots."""
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "big.bin").write_bytes(BIG)
    (src / "small.txt").write_bytes(b"small\n")
    client.signup(server, "repair@example.org")
    client.run("backup", str(src))
    first = snapshot_of(src)
    (src / "later.txt").write_bytes(b"in the second snapshot only\n")
    client.run("backup", str(src))
    return [first, snapshot_of(src)]


def check(client: Client) -> tuple[int, dict[str, object]]:
    proc = client.run("check", "--json", check=False)
    assert proc.returncode in (0, 6), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def snapshot_ids(client: Client) -> list[str]:
    return [s["id"] for s in json.loads(client.run("snapshots", "--json").stdout)]


def biggest_chunk_pack(server: Server) -> bytes:
    with sqlite3.connect(server.home / "metadata.db") as db:
        (pack_id,) = db.execute(
            "SELECT pack_id FROM blob_locations ORDER BY length DESC LIMIT 1"
        ).fetchone()
    return pack_id  # type: ignore[no-any-return]


def test_repair_index_restores_deleted_index_rows(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    contents = back_up_twice(server, device_a, tmp_path / "Data")
    device_b.login(server, "repair@example.org")  # the write right only
    pack_id = biggest_chunk_pack(server)
    server.stop()
    with sqlite3.connect(server.home / "metadata.db") as db:
        lost = db.execute("DELETE FROM blob_locations WHERE pack_id = ?", (pack_id,)).rowcount
    assert lost >= 3
    server.start()
    code, report = check(device_a)
    assert code == 6 and report["damaged"]

    dry = json.loads(device_a.run("repair", "index", "--dry-run", "--json").stdout)
    assert (dry["added"], dry["removed"], dry["unreadable_packs"]) == (lost, 0, 0)
    assert check(device_a)[0] == 6  # a dry run changes nothing

    for what in ("index", "snapshots"):
        refused = device_b.run("repair", what, check=False)
        assert refused.returncode == 5, refused.stderr
        assert "repair needs the manage right" in refused.stderr
    assert check(device_a)[0] == 6

    out = device_a.run("repair", "index").stdout
    assert f"pack {pack_id.hex()[:8]}: fixed {lost} row(s) added, 0 removed" in out
    assert check(device_a)[0] == 0
    assert "matches their headers" in device_a.run("repair", "index").stdout
    for snap_id, content in zip(snapshot_ids(device_a), contents, strict=True):
        target = tmp_path / f"restored-{snap_id[:8]}"
        device_a.run("restore", snap_id, "--target", str(target))
        assert snapshot_of(target / "Data") == content


def test_repair_snapshots_after_a_lost_pack(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    back_up_twice(server, device_a, tmp_path / "Data")
    ids = snapshot_ids(device_a)
    pack_id = biggest_chunk_pack(server)
    server.stop()
    key = server.delete_object(pack_id)
    server.start()
    code, report = check(device_a)
    assert code == 6 and len(report["damaged"]) == 2  # type: ignore[arg-type]

    dry = json.loads(device_a.run("repair", "snapshots", "--dry-run", "--json").stdout)
    assert [s["original"] for r in dry["refs"] for s in r["snapshots"]] == ids[::-1]
    assert snapshot_ids(device_a) == ids

    proc = device_a.run("repair", "snapshots")
    assert "recorded in edit commit" in proc.stdout and key not in proc.stdout + proc.stderr
    repaired = snapshot_ids(device_a)
    assert len(repaired) == 2 and not set(repaired) & set(ids)
    # The first backup's pack held all of the first snapshot's listings: it is empty
    # now. The second keeps what its own pack holds: its listing and later.txt.
    expected = [set(), {"later.txt"}]
    for snap_id, original, files in zip(repaired, ids, expected, strict=True):
        for name in (snap_id, original[:12]):  # the original's ID names its repair
            target = tmp_path / f"restored-{name[:8]}"
            device_a.run("restore", name, "--target", str(target))
            got = {str(p.relative_to(target / "Data")) for p in target.rglob("*") if p.is_file()}
            assert got == files
    assert (target / "Data" / "later.txt").read_bytes() == b"in the second snapshot only\n"
    # The lost pack's records are dropped too, so check is clean again.
    code, report = check(device_a)
    assert code == 0, report

    # Nothing is left to repair.
    assert "no snapshot has lost data" in device_a.run("repair", "snapshots").stdout

    # The device still has the files: its next backup finds big.bin's chunks missing
    # (its stat cache named them) and uploads them again.
    device_a.run("backup", str(tmp_path / "Data"))
    target = tmp_path / "restored-after"
    device_a.run("restore", "latest", "--target", str(target))
    assert snapshot_of(target / "Data") == snapshot_of(tmp_path / "Data")
    assert check(device_a)[0] == 0


def test_a_sync_folder_that_lost_a_pack_is_healed_by_a_device_that_has_the_files(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    """repair snapshots drops the lost pack's records and leaves the folder's state as
    it is (rewriting it without huge.bin would make device B delete its copy); B's next
    pass finds huge.bin's chunks missing and uploads them again. huge.bin is larger
    than a pack, so its first pack holds its data alone (a pack that held the folder's
    head commit would be a lost commit: nothing but a device's memory could heal that)."""
    huge = random.Random(4).randbytes(20 * 1024 * 1024)
    fa, fb = tmp_path / "a", tmp_path / "b"
    device_a.signup(server, "heal@example.org")
    device_b.login(server, "heal@example.org")
    device_a.run("sync", "add", str(fa), "--name", "Shared")
    device_b.run("sync", "add", str(fb), "--name", "Shared")
    (fa / "small.txt").write_bytes(b"small\n")
    device_a.run("sync", "run")
    (fa / "huge.bin").write_bytes(huge)
    device_a.run("sync", "run")
    device_b.run("sync", "run")
    assert (fb / "huge.bin").read_bytes() == huge
    (fa / "huge.bin").unlink()  # device A no longer has it; B does
    with sqlite3.connect(server.home / "metadata.db") as db:
        (largest,) = db.execute("SELECT pack_id FROM packs ORDER BY size DESC LIMIT 1").fetchone()
    server.stop()
    server.delete_object(largest)
    server.start()

    proc = device_a.run("repair", "snapshots")
    assert "dropped the records of 1 pack(s) the server lost" in proc.stdout
    assert "lost on the server; left as they are" in proc.stderr
    device_b.run("sync", "run")
    assert (fb / "huge.bin").read_bytes() == huge  # never deleted here

    fresh = Client(tmp_path / "fresh")
    fresh.login(server, "heal@example.org")
    fresh.run("sync", "add", str(tmp_path / "c"), "--name", "Shared")
    fresh.run("sync", "run")
    assert (tmp_path / "c" / "huge.bin").read_bytes() == huge
    assert check(device_a)[0] == 0
