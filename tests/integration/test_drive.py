"""The drive (smart sync) against a real server through real FUSE: content on demand,
listings without content, writes that reach other devices, pins and eviction."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.drive import (
    EMAIL,
    bytes_out,
    commit_head,
    mounted,
    share_folder,
    state,
    status,
    wait_for,
)
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import Client, Server

pytestmark = requires_fuse

MiB = 1 << 20


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_open_downloads_only_that_file_and_listing_downloads_nothing(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "report.odt").write_bytes(os.urandom(3 * MiB))
    (folder / "sub" / "big.bin").write_bytes(os.urandom(12 * MiB))
    (folder / "sub" / "note.txt").write_text("hello")
    share_folder(server, device_a, device_b, folder)
    metrics = server.with_metrics()
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        wait_for(
            lambda: status(device_b, mnt)["passes"], what="the drive's first look at the server"
        )
        before = bytes_out(metrics)
        listing = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        assert "report.odt" in listing.stdout and "big.bin" in listing.stdout
        assert (mnt / "sub" / "big.bin").stat().st_size == 12 * MiB
        assert state(device_b, mnt / "report.odt") == "online"
        assert bytes_out(metrics) == before  # trees were loaded at mount: no content read

        assert _digest(mnt / "report.odt") == _digest(folder / "report.odt")
        fetched = bytes_out(metrics) - before
        assert 3 * MiB <= fetched < 4 * MiB  # that file's chunks, not big.bin's
        assert state(device_b, mnt / "report.odt") == "cached"
        assert state(device_b, mnt / "sub" / "big.bin") == "online"

        again = bytes_out(metrics)
        assert _digest(mnt / "report.odt") == _digest(folder / "report.odt")
        assert bytes_out(metrics) == again  # cached: nothing fetched twice


def test_writes_reach_the_other_device_and_its_changes_appear(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        (mnt / "new.txt").write_text("written in the drive")
        (mnt / "dir").mkdir()
        (mnt / "dir" / "inner.txt").write_text("inner")
        os.rename(mnt / "old.txt", mnt / "dir" / "moved.txt")
        device_b.run("drive", "flush", str(mnt))
        assert status(device_b, mnt)["pending_changes"] == 0
        device_a.run("sync", "run")
        assert (folder / "new.txt").read_text() == "written in the drive"
        assert (folder / "dir" / "inner.txt").read_text() == "inner"
        assert (folder / "dir" / "moved.txt").read_text() == "old"
        assert not (folder / "old.txt").exists()

        (folder / "from-a.txt").write_text("made on A")
        device_a.run("sync", "run")
        wait_for(lambda: (mnt / "from-a.txt").exists(), what="A's file in the drive")
        assert (mnt / "from-a.txt").read_text() == "made on A"


@pytest.mark.parametrize("other", ["sync-folder", "drive"])
def test_both_devices_edit_one_file_conflict_copy(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path, other: str
) -> None:
    """B's drive and another device (A's sync folder, or C's drive) edit the same file
    before either has seen the other's edit: one keeps the name, the other becomes a
    conflict copy, on every device; nothing is lost."""
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "shared.txt").write_text("base")
    share_folder(server, device_a, device_b, folder)
    device_c = Client(tmp_path / "device-c")
    device_c.login(server, EMAIL)
    with contextlib.ExitStack() as stack:
        mnt_b = stack.enter_context(mounted(device_b, "docs", tmp_path / "drive-b"))
        assert (mnt_b / "shared.txt").read_text() == "base"
        if other == "drive":
            mnt_c = stack.enter_context(mounted(device_c, "docs", tmp_path / "drive-c"))
            assert (mnt_c / "shared.txt").read_text() == "base"
        # Both edits land within milliseconds: well inside the drive's 2 s quiet time.
        (mnt_b / "shared.txt").write_text("edited on B")
        if other == "drive":
            (mnt_c / "shared.txt").write_text("edited on C")
            device_c.run("drive", "flush", str(mnt_c))
        else:
            (folder / "shared.txt").write_text("edited on C")
            device_a.run("sync", "run")
        device_b.run("drive", "flush", str(mnt_b))
        device_a.run("sync", "run")
        names = sorted(p.name for p in folder.iterdir())
        copies = [n for n in names if n.startswith("shared (conflict from ")]
        assert len(copies) == 1, names
        contents = {(folder / "shared.txt").read_text(), (folder / copies[0]).read_text()}
        assert contents == {"edited on B", "edited on C"}
        wait_for(lambda: (mnt_b / copies[0]).exists(), what="the conflict copy in B's drive")
        assert {(mnt_b / "shared.txt").read_text(), (mnt_b / copies[0]).read_text()} == contents


@pytest.mark.parametrize(
    "layout",
    [{b"big": 100_000}, {b"d%04d" % i: 100 for i in range(1000)}],
    ids=["one-dir-100k", "1000-dirs-100-each"],
)
def test_listing_100k_files_fetches_no_content(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path, layout: dict[bytes, int]
) -> None:
    device_a.signup(server, "many@example.com")
    device_b.login(server, "many@example.com")
    commit_head(device_a, "many", layout)
    metrics = server.with_metrics()
    mnt = tmp_path / "drive"
    with mounted(device_b, "many", mnt):
        wait_for(lambda: status(device_b, mnt)["passes"], what="the drive's first pass")
        before = bytes_out(metrics)
        listing = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr[-500:]
        assert listing.stdout.count("file-0") == 100_000
        found = subprocess.run(["find", str(mnt), "-type", "f"], capture_output=True, text=True)
        assert found.returncode == 0 and len(found.stdout.splitlines()) == 100_000
        assert bytes_out(metrics) == before  # every tree was fetched at mount: nothing since
        assert status(device_b, mnt)["fetched_bytes"] == 0


def test_a_file_kept_open_while_another_device_changes_it_makes_a_conflict_copy(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "long.txt").write_text("base")
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        head = status(device_b, mnt)["head"]
        fd = os.open(mnt / "long.txt", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"B, still ")
        (folder / "long.txt").write_text("changed on A meanwhile")
        device_a.run("sync", "run")
        wait_for(lambda: status(device_b, mnt)["head"] > head, what="A's head in the drive")
        os.write(fd, b"editing")
        os.close(fd)
        device_b.run("drive", "flush", str(mnt))
    device_a.run("sync", "run")
    copies = [p for p in folder.iterdir() if p.name.startswith("long (conflict from ")]
    assert len(copies) == 1, sorted(p.name for p in folder.iterdir())
    versions = {(folder / "long.txt").read_text(), copies[0].read_text()}
    assert versions == {"changed on A meanwhile", "B, still editing"}


def test_an_open_file_outlives_its_name(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    """`tail -f` of a file someone deletes: the open handle still reads and stats."""
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "log.txt").write_text("first lines\n")
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        with (mnt / "log.txt").open("rb") as old, (mnt / "new.txt").open("wb") as new:
            new.write(b"being written")
            new.flush()
            os.unlink(mnt / "log.txt")
            os.unlink(mnt / "new.txt")
            assert os.fstat(old.fileno()).st_size == len("first lines\n")
            assert old.read() == b"first lines\n"
            assert os.fstat(new.fileno()).st_size == len("being written")
        assert sorted(os.listdir(mnt)) == []
        device_b.run("drive", "flush", str(mnt))
    device_a.run("sync", "run")
    assert sorted(os.listdir(folder)) == []
