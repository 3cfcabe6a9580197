"""`anysync check` against a real server whose operator damages it (issue #13): every
injected fault is found, named by snapshot and file, exit 6; a sound repository is
clean, exit 0. Faults are made as a hostile or unlucky operator would: stop the server,
edit metadata.db or objects/, start it again; each test starts from one backed-up state."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Client, Server

BIG = random.Random(3).randbytes(3 * 1024 * 1024)  # several chunks, in one pack


@pytest.fixture
def backed_up(server: Server, device_a: Client, tmp_path: Path) -> Iterator[Path]:
    src = tmp_path / "Data"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "big.bin").write_bytes(BIG)
    (src / "small.txt").write_bytes(b"small\n")
    device_a.signup(server, "check@example.org")
    device_a.run("backup", str(src))
    (src / "later.txt").write_bytes(b"in the second snapshot only\n")
    device_a.run("backup", str(src))
    yield src


def check(client: Client, *args: str) -> tuple[int, dict[str, object], str]:
    proc = client.run("check", "--json", *args, check=False)
    assert proc.returncode in (0, 6), proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def damaged_paths(report: dict[str, object]) -> set[str]:
    damaged = report["damaged"]
    assert isinstance(damaged, list)
    return {f["path"] for d in damaged for f in d["files"]}


def biggest_chunk(server: Server) -> tuple[bytes, bytes, int, int]:
    """(blob ID, pack ID, offset, length) of the largest indexed blob: a chunk of big.bin."""
    with sqlite3.connect(server.home / "metadata.db") as db:
        row = db.execute(
            "SELECT blob_id, pack_id, offset, length FROM blob_locations "
            "ORDER BY length DESC LIMIT 1"
        ).fetchone()
    return row  # type: ignore[no-any-return]


def edit_db(server: Server, sql: str, *params: object) -> None:
    server.stop()
    with sqlite3.connect(server.home / "metadata.db") as db:
        assert db.execute(sql, params).rowcount >= 1
    server.start()


def test_a_sound_repository_is_clean(server: Server, device_a: Client, backed_up: Path) -> None:
    code, report, _ = check(device_a)
    assert code == 0 and report["clean"] is True
    assert (report["refs"], report["snapshots"]) == (1, 2)
    code, report, _ = check(device_a, "--read-data")
    assert code == 0 and report["chunks_read"] == report["chunks"]
    proc = device_a.run("check", "--read-data-subset", "50%")
    assert "no damage found" in proc.stdout


def test_a_missing_index_row_is_found(server: Server, device_a: Client, backed_up: Path) -> None:
    blob_id, *_ = biggest_chunk(server)
    edit_db(server, "DELETE FROM blob_locations WHERE blob_id = ?", blob_id)
    code, report, _ = check(device_a)
    assert code == 6 and damaged_paths(report) == {"Data/docs/big.bin"}
    proc = device_a.run("check", check=False)
    assert proc.returncode == 6
    assert "  Data/docs/big.bin: part of its content is not in the server's index" in proc.stderr
    assert "DAMAGE FOUND" in proc.stdout


def test_a_missing_pack_is_found_without_showing_a_store_key(
    server: Server, device_a: Client, backed_up: Path
) -> None:
    _, pack_id, _, _ = biggest_chunk(server)
    server.stop()
    key = server.delete_object(pack_id)
    server.start()
    proc = device_a.run("check", check=False)
    assert proc.returncode == 6
    # The first backup's pack held everything then: the first snapshot is lost whole;
    # the second keeps its own listings and new file, and names what it shared.
    lost = f"pack {pack_id.hex()[:8]} is missing or damaged on the server"
    assert f"  (the whole snapshot): its directory listing cannot be read ({lost})" in proc.stderr
    assert f"  Data/docs: its directory listing cannot be read ({lost})" in proc.stderr
    assert "Data/later.txt" not in proc.stderr
    assert key not in proc.stderr + proc.stdout


def test_a_flipped_byte_is_found_by_reading_the_data(
    server: Server, device_a: Client, backed_up: Path
) -> None:
    _, pack_id, offset, length = biggest_chunk(server)
    server.stop()
    data = bytearray(server.read_object(pack_id))
    data[offset + length // 2] ^= 0x40
    server.write_object(pack_id, bytes(data))
    server.start()
    assert check(device_a)[0] == 0  # the index and the pack's length still look right
    code, report, _ = check(device_a, "--read-data")
    assert code == 6 and damaged_paths(report) == {"Data/docs/big.bin"}


def test_an_index_row_pointing_into_another_pack_is_found_by_reading(
    server: Server, device_a: Client, backed_up: Path
) -> None:
    """The blob recorded where it is not (a pack recorded twice, an index gone wrong)."""
    blob_id, pack_id, _, _ = biggest_chunk(server)
    with sqlite3.connect(server.home / "metadata.db") as db:
        (other,) = db.execute(
            "SELECT pack_id FROM packs WHERE pack_id != ? ORDER BY size DESC LIMIT 1", (pack_id,)
        ).fetchone()
    edit_db(
        server,
        "UPDATE blob_locations SET pack_id = ?, offset = 0, length = 64 WHERE blob_id = ?",
        other,
        blob_id,
    )
    code, report, _ = check(device_a, "--read-data")
    assert code == 6 and damaged_paths(report) == {"Data/docs/big.bin"}


def test_a_pack_recorded_twice_is_found(server: Server, device_a: Client, backed_up: Path) -> None:
    """A packs row and its index rows copied under another pack ID (a metadata restore
    gone wrong): no snapshot is hurt while the copy is unused, but the index is wrong."""
    _, pack_id, _, _ = biggest_chunk(server)
    # FindBlobs answers every copy, in pack ID order, and the client keeps the last: a
    # twin that sorts first stays unused (one that sorted after the real pack was read,
    # and the test failed whenever the random pack ID was below it).
    twin = b"\x00" * 16
    server.stop()
    with sqlite3.connect(server.home / "metadata.db") as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(packs)")]
        picked = ", ".join("?" if c == "pack_id" else c for c in columns)
        db.execute(
            f"INSERT INTO packs ({', '.join(columns)}) SELECT {picked} FROM packs "
            "WHERE pack_id = ?",
            (twin, pack_id),
        )
        db.execute(
            "INSERT INTO blob_locations SELECT user, blob_id, ?, offset, length "
            "FROM blob_locations WHERE pack_id = ?",
            (twin, pack_id),
        )
    server.start()
    code, report, _ = check(device_a)
    assert code == 6, report
    assert report["index"] == [
        "the server records 1 pack(s) that are missing or shorter than recorded",
        "the server records 1 pack(s) twice, under another pack ID",
    ]
    assert twin.hex()[:8] not in json.dumps(report)  # no store keys or pack IDs


def test_a_ref_to_a_missing_commit_is_found(
    server: Server, device_a: Client, backed_up: Path
) -> None:
    edit_db(server, "UPDATE refs SET commit_id = ?", b"\x42" * 32)
    proc = device_a.run("check", check=False)
    assert proc.returncode == 6
    assert f"backup of {backed_up}" in proc.stderr and "cannot be read" in proc.stderr


def test_bad_arguments_get_one_line(device_a: Client, server: Server, backed_up: Path) -> None:
    proc = device_a.run("check", "--read-data-subset", "150%", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("not '150%'")
    shutil.rmtree(backed_up)  # check needs nothing local but the home
    assert device_a.run("check").returncode == 0
