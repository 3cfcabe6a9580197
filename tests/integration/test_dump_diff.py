"""`anysync dump` and `anysync diff` (issue #16): one file of a snapshot to stdout, and
what changed between two snapshots. The real CLI against a real server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.integration.harness import CLIENT, Client, Server, base_env


def _snapshots_of_a_changing_tree(client: Client, server: Server, tmp_path: Path) -> Path:
    client.signup(server, "dumpdiff@example.org")
    root = tmp_path / "Proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('one')\n")
    (root / "README").write_text("readme\n")
    (root / "old.txt").write_text("going away\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "link").symlink_to("README")
    client.run("backup", str(root))
    (root / "src" / "main.py").write_text("print('two')\n")
    (root / "old.txt").unlink()
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("guide\n")
    (root / "README").chmod(0o600)
    client.run("backup", str(root))
    return root


def test_dump_writes_the_file_as_it_was(server: Server, device_a: Client, tmp_path: Path) -> None:
    root = _snapshots_of_a_changing_tree(device_a, server, tmp_path)
    first = device_a.snapshots()[0]["id"]
    env = base_env() | {
        "ANYSYNC_HOME": str(device_a.home),
        "ANYSYNC_TESTONLY_FAULT": "crypto.scrypt",
    }
    old = subprocess.run(
        [CLIENT, "dump", first[:8], "Proj/src/main.py"], env=env, capture_output=True, timeout=120
    )
    assert old.returncode == 0 and old.stdout == b"print('one')\n"
    big = subprocess.run(
        [CLIENT, "dump", "latest", "/Proj/big.bin"], env=env, capture_output=True, timeout=120
    )
    assert big.returncode == 0 and big.stdout == (root / "big.bin").read_bytes()

    for path, code, said in (
        ("Proj/src", 2, "is a directory"),
        ("Proj/link", 2, "is a symlink"),
        ("Proj/old.txt", 7, "is not in snapshot"),
    ):
        proc = device_a.run("dump", "latest", path, check=False)
        assert proc.returncode == code and said in proc.stderr, (path, proc.stderr)


def test_diff_lists_each_change_and_counts_them(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _snapshots_of_a_changing_tree(device_a, server, tmp_path)
    first, second = (s["id"][:8] for s in device_a.snapshots())
    out = device_a.run("diff", first, second).stdout.splitlines()
    assert out[:-1] == [
        "U  Proj/README",
        "+  Proj/docs/",
        "-  Proj/old.txt",
        "M  Proj/src/main.py",
    ]
    assert "1 added, 1 removed, 1 changed, 0 changed type, 1 metadata only" in out[-1]
    as_json = json.loads(device_a.run("diff", first, second, "--json").stdout)
    assert {"change": "M", "path": "Proj/src/main.py"} in as_json
    assert device_a.run("diff", second, second).stdout.startswith(f"{second} → {second}: 0 added")


def test_find_names_the_snapshots_that_hold_a_match(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _snapshots_of_a_changing_tree(device_a, server, tmp_path)
    first, second = (s["id"] for s in device_a.snapshots())
    found = json.loads(device_a.run("find", "*.txt", "--json").stdout)
    assert [(f["snapshot"], f["paths"]) for f in found] == [(first, ["Proj/old.txt"])]
    by_name = json.loads(device_a.run("find", "main.py", "--json").stdout)
    assert [f["paths"] for f in by_name] == [["Proj/src/main.py"], ["Proj/src/main.py"]]
    by_path = json.loads(device_a.run("find", "Proj/docs/*", "--json").stdout)
    assert [(f["snapshot"], f["paths"]) for f in by_path] == [(second, ["Proj/docs/guide.md"])]
    assert "no snapshot holds" in device_a.run("find", "*.odt").stdout


def test_stats_restore_size_and_raw(server: Server, device_a: Client, tmp_path: Path) -> None:
    _snapshots_of_a_changing_tree(device_a, server, tmp_path)
    size = json.loads(device_a.run("stats", "--json").stdout)
    snaps = device_a.snapshots()
    assert size["snapshots"] == 2
    assert size["bytes"] == sum(s["stats"]["bytes"] for s in snaps)
    assert size["latest_bytes"] == snaps[-1]["stats"]["bytes"]
    raw = json.loads(device_a.run("stats", "--mode", "raw", "--json").stdout)
    # Dedup: both snapshots share the random 3 MiB file, stored once.
    assert 3 * 1024 * 1024 <= raw["stored_bytes"] < size["bytes"]
    assert "stored on the server" in device_a.run("stats", "--mode", "raw").stdout
