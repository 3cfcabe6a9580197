"""What a backup leaves out (issue #16): --exclude, --exclude-file, --exclude-caches,
--one-file-system, as restic users type them. The real CLI, a real server, real files
and (as root) a real tmpfs mount."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.client.exclude import CACHEDIR_SIGNATURE
from tests.integration.harness import Client, Server


def _listed(client: Client) -> list[str]:
    out = client.run("ls", "-r", "latest").stdout.splitlines()
    return sorted(line.split()[-1] for line in out if line.strip())


def _tree(root: Path) -> None:
    (root / "src" / "node_modules" / "pkg").mkdir(parents=True)
    (root / "src" / "node_modules" / "pkg" / "index.js").write_text("x")
    (root / "src" / "main.py").write_text("print()")
    (root / "big.iso").write_bytes(b"\0" * 1000)
    (root / "keep.iso").write_bytes(b"\0" * 10)
    (root / "cache").mkdir()
    (root / "cache" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n")
    (root / "cache" / "blob").write_text("cached")
    (root / "notes.txt").write_text("notes")


def test_excludes_leave_paths_out_and_say_how_many(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "exclude@example.org")
    root = tmp_path / "Home"
    _tree(root)
    patterns = tmp_path / "excludes.txt"
    patterns.write_text("# build output\nnode_modules/\n\n!keep.iso\n")
    out = device_a.run(
        "backup", str(root), "--exclude", "*.iso", "--exclude-file", str(patterns),
        "--exclude-caches",
    ).stdout  # fmt: skip
    assert "3 paths excluded" in out  # big.iso, node_modules, cache
    names = _listed(device_a)
    assert not any("node_modules" in n or "big.iso" in n or "cache" in n for n in names), names
    assert any(n.endswith("keep.iso") for n in names) and any("main.py" in n for n in names)

    # Without the options, the next backup has everything again.
    device_a.run("backup", str(root))
    assert any("node_modules" in n for n in _listed(device_a))


def test_a_missing_exclude_file_is_refused_before_anything_is_read(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "exclude@example.org")
    root = tmp_path / "Home"
    _tree(root)
    proc = device_a.run(
        "backup", str(root), "--exclude-file", str(tmp_path / "nope.txt"), check=False
    )
    assert proc.returncode == 2 and "cannot read the exclude file" in proc.stderr
    assert device_a.snapshots() == []


@pytest.fixture
def mounted_below(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted inside the tree to back up (needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    point = tmp_path / "Home" / "mnt"
    point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)
    try:
        (point / "elsewhere.txt").write_text("on another file system")
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_one_file_system_stays_on_the_paths_file_system(
    server: Server, device_a: Client, tmp_path: Path, mounted_below: Path
) -> None:
    device_a.signup(server, "exclude@example.org")
    root = tmp_path / "Home"
    (root / "here.txt").write_text("here")
    device_a.run("backup", str(root))
    assert any("elsewhere.txt" in n for n in _listed(device_a))
    out = device_a.run("backup", str(root), "--one-file-system").stdout
    assert "1 path excluded" in out
    names = _listed(device_a)
    assert any("here.txt" in n for n in names) and not any("mnt" in n for n in names)


def test_dry_run_says_what_would_be_read_and_writes_nothing(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "dry@example.org")
    root = tmp_path / "Home"
    _tree(root)  # 6 files, one of them under node_modules, one in a cache dir

    def dry(*extra: str) -> dict[str, object]:
        out: dict[str, object] = json.loads(
            device_a.run("backup", str(root), "--dry-run", "--json", *extra).stdout
        )
        return out

    before = json.loads(device_a.run("stats", "--mode", "raw", "--json").stdout)
    first = dry("--exclude", "node_modules/")
    assert (first["files"], first["to_read"], first["excluded"]) == (6, 6, 1)
    assert device_a.snapshots() == []
    assert json.loads(device_a.run("stats", "--mode", "raw", "--json").stdout) == before

    device_a.run("backup", str(root))
    assert dry()["to_read"] == 0 and dry()["files"] == 7
    (root / "notes.txt").write_text("changed since the backup")
    changed = dry()
    assert changed["to_read"] == 1 and changed["to_read_bytes"] == len("changed since the backup")
    assert len(device_a.snapshots()) == 1
    text = device_a.run("backup", str(root), "-n").stdout
    assert "1 new or changed" in text and "nothing was read, uploaded or committed" in text


def test_json_progress_lines_on_stderr_for_scripts(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "progress@example.org")
    root = tmp_path / "Home"
    _tree(root)
    proc = device_a.run("backup", str(root), "--json", env={"ANYSYNC_PROGRESS": "json"})
    assert json.loads(proc.stdout)["files"] == 7  # stdout: the answer alone
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines and lines[-1]["done"] is True and lines[-1]["progress"] == "backup"
    assert lines[-1]["files"] == 7
