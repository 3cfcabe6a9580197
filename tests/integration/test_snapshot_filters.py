"""Which snapshot a command means (issue #16): `latest` among several backup sources,
--path and --device on snapshots, ls and restore, and -m shown in `snapshots`.
The real CLI, two devices, a real server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.harness import Client, Server


def test_latest_per_source_and_the_filters(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "filters@example.org")
    device_b.login(server, "filters@example.org")
    docs = tmp_path / "Docs"
    docs.mkdir()
    (docs / "report.txt").write_text("report")
    one = tmp_path / "one.txt"
    one.write_text("a single file")
    device_a.run("backup", str(docs), "-m", "before the trip")
    device_a.run("backup", str(one))  # now the newest snapshot of the account

    # `latest` alone: the newest, with a line saying there are other sources.
    plain = device_a.run("ls", "latest")
    assert "one.txt" in plain.stdout
    assert "newest of 2 backup sources" in plain.stderr and "--path" in plain.stderr
    # `latest` of one source.
    by_path = device_a.run("ls", "latest", "--path", str(docs), "-r")
    assert "report.txt" in by_path.stdout and by_path.stderr == ""
    target = tmp_path / "restored"
    device_b.run("restore", "latest", "--path", str(docs), "--target", str(target))
    assert (target / "Docs" / "report.txt").read_text() == "report"

    listed = device_a.run("snapshots").stdout
    assert "MESSAGE" in listed and "before the trip" in listed
    only = json.loads(device_a.run("snapshots", "--json", "--path", str(one)).stdout)
    assert [s["paths"] for s in only] == [[str(one)]]
    mine = json.loads(
        device_b.run("snapshots", "--json", "--device", str(device_a.device_id)).stdout
    )
    assert len(mine) == 2
    assert json.loads(device_b.run("snapshots", "--json", "--device", "nobody").stdout) == []

    none = device_a.run("ls", "latest", "--path", str(tmp_path / "never"), check=False)
    assert none.returncode == 7 and "no snapshot matches" in none.stderr


def test_tags_are_stored_shown_and_select(server: Server, device_a: Client, tmp_path: Path) -> None:
    device_a.signup(server, "tags@example.org")
    docs = tmp_path / "Docs"
    docs.mkdir()
    (docs / "a.txt").write_text("one")
    device_a.run("backup", str(docs), "--tag", "work,before-upgrade", "--tag", "work")
    (docs / "a.txt").write_text("two")
    device_a.run("backup", str(docs))

    snaps = device_a.snapshots()
    assert [s["tags"] for s in snaps] == [["before-upgrade", "work"], []]
    assert "TAGS" in device_a.run("snapshots").stdout
    tagged = json.loads(device_a.run("snapshots", "--json", "--tag", "work").stdout)
    assert [s["id"] for s in tagged] == [snaps[0]["id"]]
    # `latest` among the tagged ones is the older snapshot.
    target = tmp_path / "r"
    device_a.run("restore", "latest", "--tag", "before-upgrade", "--target", str(target))
    assert (target / "Docs" / "a.txt").read_text() == "one"
    bad = device_a.run("backup", str(docs), "--tag", "a,,b", check=False)
    assert bad.returncode == 2 and "printable" in bad.stderr


def test_device_filter_takes_the_name_shown_today(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "renamed@example.org")
    docs = tmp_path / "Docs"
    docs.mkdir()
    (docs / "a.txt").write_text("one")
    device_a.run("backup", str(docs))
    device_a.run("devices", "rename", str(device_a.device_id), "laptop-2026")
    listed = device_a.run("snapshots").stdout
    assert "laptop-2026" in listed  # `snapshots` shows today's name ...
    found = json.loads(device_a.run("snapshots", "--json", "--device", "laptop-2026").stdout)
    assert len(found) == 1  # ... and --device takes it
    device_a.run("ls", "latest", "--device", "laptop-2026")
