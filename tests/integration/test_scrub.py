"""`anysync-server scrub` beside a running server, on the local store and on S3 (issue
#13, docs/prune-design.md §8): a sound store is clean (exit 0); a lost pack object and an
object no pack refers to are reported (exit 6) and nothing is deleted; the server serves
on throughout, as the scrub takes no lock of its own."""

from __future__ import annotations

import io
import json
import random
import sqlite3
from pathlib import Path

from anysync.server import packs
from anysync.store import LocalStore
from anysync.types import PackId
from tests.integration.harness import Client, Server


def scrub(server: Server, *args: str) -> tuple[int, str]:
    proc = server.admin("scrub", *args, check=False)
    assert proc.returncode in (0, 6), proc.stderr
    return proc.returncode, proc.stdout


def recorded(server: Server) -> tuple[str, list[bytes]]:
    """The account's user ID and its live packs."""
    with sqlite3.connect(server.home / "metadata.db") as db:
        (user_id,) = db.execute("SELECT user_id FROM users").fetchone()
        rows = db.execute("SELECT pack_id FROM packs WHERE state = 0 ORDER BY pack_id")
        return user_id, [bytes(r[0]) for r in rows]


def put_stray_object(server: Server, user_id: str, data: bytes) -> str:
    """An object in the account's directory that no pack row names (a crashed upload,
    a restore of the store from a later backup than the database)."""
    key = packs.pack_key((server.home / "server.secret").read_bytes(), user_id, PackId.random())
    if server.s3 is None:
        LocalStore(server.home / "objects").put(key, io.BytesIO(data), len(data))
    else:
        server._s3_store().put(key, io.BytesIO(data), len(data))
    return key


def test_scrub_reports_lost_and_stray_objects(
    any_server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Data"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(5).randbytes(2 * 1024 * 1024))
    (src / "small.txt").write_bytes(b"small\n")
    device_a.signup(any_server, "scrub@example.org")
    device_a.run("backup", str(src))
    user_id, live = recorded(any_server)
    assert live

    code, out = scrub(any_server)
    assert code == 0, out
    assert out.startswith(f"{len(live)} objects, {len(live)} packs; 0 missing, 0 orphans")

    lost = live[0]
    any_server.delete_object(lost)
    stray = put_stray_object(any_server, user_id, b"x" * 1234)

    code, out = scrub(any_server)  # orphan_age 24h: the stray object is only remembered
    assert code == 6
    lines = out.splitlines()
    assert f"missing: pack {lost.hex()} (live) of account {user_id}" in lines
    assert "1 younger orphans not reported yet" in lines[0]
    assert not any(line.startswith("orphan:") for line in lines)

    code, out = scrub(any_server, "--json", "--orphan-age", "0s")
    assert code == 6
    report = json.loads(out)
    assert report["missing"] == [{"user_id": user_id, "pack_id": lost.hex(), "state": "live"}]
    assert [(o["key"], o["size"], o["user_id"]) for o in report["orphans"]] == [
        (stray, 1234, user_id)
    ]

    # Reported, not touched: the stray object is still there, the pack row too.
    assert recorded(any_server)[1] == live
    code, out = scrub(any_server, "--orphan-age", "0s")
    assert code == 6 and f"orphan: {stray} (1.2 KiB, account {user_id}" in out
    # The server kept serving beside the scrubs (the lost pack holds device_a's commit).
    device_b.signup(any_server, "other@example.org")
    device_b.run("backup", str(src))
