"""Issue 11, trust cases 1 and 2: a server that hides a ref, and a server that lost a pack.

Hostile or damaged servers are played as an operator would: stop the server, edit its
metadata.db or objects/, start it again.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.integration.harness import Client, Server


def ref_names(server: Server) -> set[str]:
    with sqlite3.connect(server.home / "metadata.db") as db:
        return {name for (name,) in db.execute("SELECT name FROM refs")}


def pack_ids(server: Server) -> set[bytes]:
    with sqlite3.connect(server.home / "metadata.db") as db:
        return {pid for (pid,) in db.execute("SELECT pack_id FROM packs")}


def snapshot_ids(client: Client) -> list[str]:
    return [s["id"] for s in json.loads(client.run("snapshots", "--json").stdout)]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- 1. a hidden ref


def test_a_hidden_ref_is_reported_by_every_command_that_lists_or_resolves(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    old, new = tmp_path / "OldSource", tmp_path / "NewSource"
    write(old / "old.txt", b"old data\n")
    write(new / "new.txt", b"new data\n")
    device_a.signup(server, "hidden@example.org")
    device_a.run("backup", str(old))
    before = ref_names(server)
    device_a.run("backup", str(new))
    (hidden,) = ref_names(server) - before

    server.stop()
    with sqlite3.connect(server.home / "metadata.db") as db:
        db.execute("DELETE FROM refs WHERE name = ?", (hidden,))
    server.start()

    target = tmp_path / "out"
    for args in (
        ["snapshots"],
        ["ls", "latest"],
        ["restore", "latest", "--target", str(target)],
    ):
        proc = device_a.run(*args, check=False)
        assert proc.returncode == 6, (args, proc.stdout, proc.stderr)
        # Named so that the user understands it: the backed-up path, not the opaque ref.
        assert str(new) in proc.stderr, (args, proc.stderr)
        assert "no longer lists" in proc.stderr
    assert not target.exists() or not any(target.iterdir())


def test_first_contact_says_how_many_refs_it_trusts(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    write(tmp_path / "One" / "1.txt", b"one\n")
    write(tmp_path / "Two" / "2.txt", b"two\n")
    device_a.signup(server, "first@example.org")
    device_a.run("backup", str(tmp_path / "One"))
    device_a.run("backup", str(tmp_path / "Two"))

    device_b.login(server, "first@example.org")
    proc = device_b.run("snapshots")
    lines = [line for line in proc.stderr.splitlines() if "first contact" in line]
    assert len(lines) == 1, proc.stderr
    assert "trusting the server's 2 refs" in lines[0]
    # Only once: from now on this device checks those refs.
    assert "first contact" not in device_b.run("snapshots").stderr
    assert "first contact" not in device_a.run("snapshots").stderr


# ---------------------------------------------------------------- 2. a lost pack

_KEY_LIKE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{32}|objects/|no object")


def assert_no_store_key(server: Server, lost: set[bytes], stderr: str) -> None:
    assert not _KEY_LIKE.search(stderr), stderr
    for pid in lost:
        key = server._object_key(pid)
        for part in key.split("/"):
            if len(part) > 8:
                assert part not in stderr, stderr


def test_a_lost_old_pack_loses_only_what_is_in_it(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Docs"
    a_content = b"the first version's only file\n" * 1000
    write(src / "a.txt", a_content)
    device_a.signup(server, "lost@example.org")
    device_a.run("backup", str(src))  # v1
    v1_packs = pack_ids(server)
    (src / "a.txt").unlink()
    b_content = b"the second version has other content\n" * 1000
    write(src / "b.txt", b_content)
    device_a.run("backup", str(src))  # v2: needs nothing from v1's packs
    v1, v2 = snapshot_ids(device_a)

    server.stop()
    # The objects are gone, the index still names them: what a lost disk looks like.
    keys = {pid: server._object_key(pid) for pid in v1_packs}
    for key in keys.values():
        (server.home / "objects" / key).unlink()
    server.start()

    proc = device_a.run("snapshots", check=False)
    assert proc.returncode == 0, proc.stderr
    assert v2[:8] in proc.stdout and v1[:8] not in proc.stdout
    assert "warning:" in proc.stderr and "cannot be read" in proc.stderr
    assert_no_store_key(server, v1_packs, proc.stderr)

    out = tmp_path / "out"
    proc = device_a.run("restore", "latest", "--target", str(out), check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "Docs" / "b.txt").read_bytes() == b_content
    assert_no_store_key(server, v1_packs, proc.stderr)

    proc = device_a.run("ls", "latest", "-r", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Docs/b.txt" in proc.stdout

    # v3 reuses a chunk that only the lost pack held: the server's index still claims it.
    write(src / "a.txt", a_content)
    device_a.run("backup", str(src))
    out3 = tmp_path / "out3"
    proc = device_a.run("restore", "latest", "--target", str(out3), check=False)
    assert proc.returncode == 11, proc.stderr
    assert "Docs/a.txt" in proc.stderr
    assert "missing" in proc.stderr
    assert (out3 / "Docs" / "b.txt").read_bytes() == b_content
    assert not (out3 / "Docs" / "a.txt").exists()
    assert_no_store_key(server, v1_packs, proc.stderr)


@pytest.mark.parametrize("what", ["snapshots", "restore"])
def test_a_lost_head_commit_is_named_without_store_keys(
    server: Server, device_a: Client, tmp_path: Path, what: str
) -> None:
    """When even the newest commit is gone there is nothing to fall back to: the command
    fails, but with a message a user understands and no store-internal key."""
    src = tmp_path / "Docs"
    write(src / "a.txt", b"only version\n")
    device_a.signup(server, "headless@example.org")
    device_a.run("backup", str(src))
    packs = pack_ids(server)
    server.stop()
    for pid in packs:
        (server.home / "objects" / server._object_key(pid)).unlink()
    server.start()
    args = ["snapshots"] if what == "snapshots" else ["restore", "latest", "--target", "x"]
    proc = device_a.run(*args, check=False)
    assert proc.returncode == 7, proc.stderr
    assert str(src) in proc.stderr or "Docs" in proc.stderr, proc.stderr
    assert "missing" in proc.stderr
    assert_no_store_key(server, packs, proc.stderr)
