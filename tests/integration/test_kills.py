"""Crashes at named steps (anysync.faults) lose nothing, and the next run finishes the job.

Every killed run must end by SIGKILL (returncode -9): that proves the process was still
running and had reached the named step, rather than having finished before a timer fired.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from anysync.faults import ENV as FAULT_ENV
from tests.integration.harness import Client, Server, snapshot_of
from tests.integration.test_sync import setup_devices, tree_of

MIB = 1024 * 1024
TMP = ".anysync-tmp-"


def killed_at(client: Client, fault: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI armed to die at `fault`; assert that it did die there."""
    proc = client.run(*args, check=False, env={FAULT_ENV: fault})
    assert proc.returncode == -signal.SIGKILL, (
        f"anysync {' '.join(args)} was to die at {fault} but exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def backup_json(client: Client, src: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(client.run("backup", "--json", str(src)).stdout)
    return out


def small_tree(root: Path, seed: int = 1) -> None:
    rnd = random.Random(seed)
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(6):
        (root / f"f{i}.txt").write_bytes(rnd.randbytes(rnd.randint(1, 5000)))
    (root / "sub" / "s.txt").write_text("in a subdirectory\n")
    (root / "sub" / "deeper" / "d.bin").write_bytes(rnd.randbytes(70_000))
    (root / "link").symlink_to("sub/s.txt")


def assert_restores_to(client: Client, src: Path, target: Path) -> None:
    client.run("restore", "latest", "--target", str(target))
    assert snapshot_of(target / src.name) == snapshot_of(src)


def snapshot_count(client: Client) -> int:
    return len(json.loads(client.run("snapshots", "--json").stdout))


# ------------------------------------------------------------------------------ backup


def test_backup_killed_between_packs_reuses_the_finished_ones(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "data"
    src.mkdir()
    # Incompressible and over one pack (16 MiB): the first pack is uploaded while the
    # rest is still being read, and dies right after it is stored.
    rnd = random.Random(5)
    (src / "one.bin").write_bytes(rnd.randbytes(12 * MIB))
    (src / "two.bin").write_bytes(rnd.randbytes(12 * MIB))
    device_a.signup(server, "kill-packs@example.org")
    killed_at(device_a, "repo.pack-uploaded:1", "backup", "--json", str(src))
    assert snapshot_count(device_a) == 0

    after = backup_json(device_a, src)
    assert after["bytes"] == 24 * MIB and after["files_read"] == 2
    # The pack stored before the crash (about 16 MiB) is found, not uploaded again.
    assert 0 < after["bytes_added"] < 12 * MIB, after
    assert snapshot_count(device_a) == 1
    assert_restores_to(device_a, src, tmp_path / "restored")


@pytest.mark.parametrize("fault", ["backup.packs-done", "history.commit-stored"])
def test_backup_killed_before_the_ref_moves(
    server: Server, device_a: Client, tmp_path: Path, fault: str
) -> None:
    src = tmp_path / "data"
    src.mkdir()
    small_tree(src)
    device_a.signup(server, "kill-commit@example.org")
    first = backup_json(device_a, src)
    (src / "f0.txt").write_text("changed after the first backup")
    (src / "new.txt").write_text("added after the first backup")

    killed_at(device_a, fault, "backup", "--json", str(src))
    # The crash left the previous snapshot as the latest: no half-made snapshot.
    assert snapshot_count(device_a) == 1
    old = tmp_path / "old"
    device_a.run("restore", first["snapshot"], "--target", str(old))
    assert (old / "data" / "f0.txt").read_bytes() != b"changed after the first backup"
    assert not (old / "data" / "new.txt").exists()

    after = backup_json(device_a, src)
    # Every content and tree blob was stored before the crash; only the commit is new
    # (it carries a new time, so it is a new blob even if the killed one was stored).
    assert after["blobs_new"] == 1, after
    assert snapshot_count(device_a) == 2
    assert_restores_to(device_a, src, tmp_path / "restored")


# ----------------------------------------------------------------------------- restore


def test_restore_killed_after_some_files_then_rerun(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "data"
    src.mkdir()
    small_tree(src)
    device_a.signup(server, "kill-restore@example.org")
    device_a.run("backup", str(src))
    target = tmp_path / "restored"
    killed_at(device_a, "restore.file-written:3", "restore", "latest", "--target", str(target))

    files = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    named = [p for p in files if not p.name.startswith(TMP)]
    # Exactly the three files renamed before the crash, each complete; the other five
    # of their batch were written (and synced) under temp names.
    assert len(named) == 3
    for p in named:
        assert p.read_bytes() == (src / p.relative_to(target / "data")).read_bytes()
    assert len(files) == 8

    assert_restores_to(device_a, src, target)
    assert not [p for p in target.rglob(TMP + "*")]


def test_restore_killed_inside_a_file_leaves_no_partial_file_under_its_name(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "a1.txt").write_text("first\n")
    (src / "a2.txt").write_text("second\n")
    big = random.Random(3).randbytes(10 * MIB)  # over the 8 MiB chunk maximum: 2+ chunks
    (src / "big.bin").write_bytes(big)
    device_a.signup(server, "kill-partial@example.org")
    device_a.run("backup", str(src))
    target = tmp_path / "restored"
    # a1.txt and a2.txt are one chunk each; the third chunk written is big.bin's first.
    killed_at(device_a, "restore.file-partial:3", "restore", "latest", "--target", str(target))

    # The three files are one batch, renamed only once all are written and synced: none
    # has its final name yet; the first two are complete temp files, big.bin a partial.
    restored = target / "data"
    temps = sorted(p.read_bytes() for p in restored.iterdir() if p.name.startswith(TMP))
    assert not [p for p in restored.iterdir() if not p.name.startswith(TMP)]
    assert len(temps) == 3
    assert b"first\n" in temps and b"second\n" in temps
    partial = next(t for t in temps if t not in (b"first\n", b"second\n"))
    assert 0 < len(partial) < len(big) and big.startswith(partial)

    # The rerun removes the killed run's temp file (the one engine temp prefix) and
    # completes the tree.
    assert_restores_to(device_a, src, target)
    assert not [p for p in target.rglob(TMP + "*")]


# -------------------------------------------------------------------------------- sync


def test_sync_killed_while_applying_downloads_converges(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="kill-sync@example.org")
    (fa / "edit.txt").write_text("v1")
    (fa / "gone.txt").write_text("to be deleted on A")
    a.run("sync", "run")
    b.run("sync", "run")
    assert tree_of(fa) == tree_of(fb)

    new = {f"new{i}.bin": os.urandom(20_000) for i in range(10)}
    for name, data in new.items():
        (fa / name).write_bytes(data)
    (fa / "edit.txt").write_text("v2 from A")
    (fa / "gone.txt").unlink()
    a.run("sync", "run")
    (fb / "mine.txt").write_text("only on B so far")

    # B commits its addition, then dies after writing 4 of the 11 downloads: removals run
    # before downloads (the deletion is applied), the remaining downloads are not, and no
    # record of this pass is saved (its journal is).
    killed_at(b, "sync.apply-file:4", "sync", "run")
    written = [n for n in [*new, "edit.txt"] if (fb / n).exists()]
    assert (
        len([n for n in new if (fb / n).exists()]) + ((fb / "edit.txt").read_text() == "v2 from A")
        == 4
    ), written
    assert not (fb / "gone.txt").exists()

    for dev in (b, a, b):
        dev.run("sync", "run")
    assert tree_of(fa) == tree_of(fb)
    for name, data in new.items():
        assert (fb / name).read_bytes() == data
    assert (fb / "edit.txt").read_text() == "v2 from A"
    assert (fa / "mine.txt").read_text() == "only on B so far"
    assert not (fb / "gone.txt").exists()
    assert not [p for p in fb.rglob("*") if "conflict" in p.name or TMP in p.name]


@pytest.mark.parametrize("fault", ["sync.apply-file:1", "sync.before-records"])
def test_sync_killed_before_records_then_remote_changes(
    server: Server, tmp_path: Path, fault: str
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="kill-records@example.org")
    (fa / "x.txt").write_text("x")
    (fa / "y.txt").write_text("y")
    a.run("sync", "run")
    killed_at(b, fault, "sync", "run")  # x.txt (and y.txt) written, no record saved
    assert (fb / "x.txt").read_text() == "x"
    (fa / "x.txt").unlink()
    (fa / "y.txt").write_text("y edited on A")
    a.run("sync", "run")
    b.run("sync", "run")
    a.run("sync", "run")
    assert tree_of(fa) == tree_of(fb)
    assert sorted(p.name for p in fb.iterdir()) == ["y.txt"]
    assert (fb / "y.txt").read_text() == "y edited on A"
