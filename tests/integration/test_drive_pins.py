"""Pin, unpin, evict and the cache limit under pressure, through the real CLI and FUSE;
indexers that would download everything are refused."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.integration.drive import mounted, share_folder, state, status, wait_for
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import Client, Server
from tests.integration.test_bad_input import tmpfs

pytestmark = requires_fuse

MiB = 1 << 20


def test_cache_stays_bounded_and_pinned_dirty_open_files_survive(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    (folder / "keep").mkdir(parents=True)
    files = {f"f{i}.bin": os.urandom(4 * MiB) for i in range(8)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    kept = {f"keep/k{i}.bin": os.urandom(3 * MiB) for i in range(2)}
    for name, data in kept.items():
        (folder / name).write_bytes(data)
    (folder / "held.bin").write_bytes(os.urandom(2 * MiB))
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    limit = 12 * MiB
    with mounted(device_b, "docs", mnt, "--cache-size", str(limit), "--min-free", "0"):
        device_b.run("pin", str(mnt / "keep"))  # downloads it now
        assert all(state(device_b, mnt / p) == "pinned" for p in kept)
        held = (mnt / "held.bin").open("rb")
        held.read(1)
        wait_for(lambda: state(device_b, mnt / "held.bin") == "cached", what="the held file cached")
        (mnt / "dirty.txt").write_text("not committed while the cache is under pressure")

        peak = 0
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data
            peak = max(peak, int(status(device_b, mnt)["cache_used"]))  # type: ignore[call-overload]
        wait_for(
            lambda: int(status(device_b, mnt)["cache_used"]) <= limit, what="eviction to the limit"
        )  # type: ignore[call-overload]
        # Pinned (6 MiB) + held (2 MiB) + the file being read (4 MiB) + one just read.
        assert peak <= limit + 2 * 4 * MiB
        assert all(state(device_b, mnt / p) == "pinned" for p in kept)
        assert state(device_b, mnt / "held.bin") == "cached"
        assert held.read() and held.close() is None
        assert (mnt / "dirty.txt").read_text().startswith("not committed")
        assert any(state(device_b, mnt / n) == "online" for n in files)  # something was evicted
        for name, data in files.items():  # evicted files read again, correctly
            assert (mnt / name).read_bytes() == data

        refused = device_b.run("evict", str(mnt / "keep"), check=False)
        assert refused.returncode != 0 and "--unpin" in refused.stderr
        assert all(state(device_b, mnt / p) == "pinned" for p in kept)
        device_b.run("evict", "--unpin", str(mnt / "keep"))
        assert all(state(device_b, mnt / p) == "online" for p in kept)
        assert (mnt / "keep" / "k0.bin").read_bytes() == kept["keep/k0.bin"]
        device_b.run("unpin", str(mnt / "keep"))
        assert state(device_b, mnt / "keep" / "k0.bin") == "cached"

        # Evicting never changes the tree: the other device still has every file.
        device_b.run("drive", "flush", str(mnt))
    device_a.run("sync", "run")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["keep", "held.bin", "dirty.txt", *files]
    )


def test_indexers_get_eio_for_uncached_files_only(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "cached.txt").write_text("read by a person first")
    (folder / "remote.txt").write_text("never opened")
    share_folder(server, device_a, device_b, folder)
    indexer = tmp_path / "tracker-extract-3"
    shutil.copy("/bin/cat", indexer)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        assert (mnt / "cached.txt").read_text() == "read by a person first"
        refused = subprocess.run([indexer, mnt / "remote.txt"], capture_output=True, text=True)
        assert refused.returncode != 0 and "Input/output error" in refused.stderr
        assert state(device_b, mnt / "remote.txt") == "online"
        assert status(device_b, mnt)["refused_indexers"] == ["tracker-extract-3"]
        served = subprocess.run([indexer, mnt / "cached.txt"], capture_output=True, text=True)
        assert served.stdout == "read by a person first"
        assert (mnt / "remote.txt").read_text() == "never opened"  # a person still can


def test_backup_does_not_descend_into_a_drive(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "remote.bin").write_bytes(os.urandom(MiB))
    share_folder(server, device_a, device_b, folder)
    home = tmp_path / "home-b"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("local file")
    with mounted(device_b, "docs", home / "AnySync"):
        device_b.run("backup", str(home))
        assert state(device_b, home / "AnySync" / "remote.bin") == "online"  # nothing hydrated
        listing = device_b.run("ls", "latest", "-r").stdout
        assert "todo.txt" in listing and "remote.bin" not in listing


def test_min_free_keeps_the_disk_from_filling(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    files = {f"f{i}.bin": os.urandom(4 * MiB) for i in range(6)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    state_dir = device_b.home / "drive"
    # A 32 MiB disk for the drive's state, a cache limit far above it, 16 MiB kept free.
    with tmpfs(state_dir, "size=32m"):
        with mounted(device_b, "docs", mnt, "--cache-size", "1G", "--min-free", "16M"):
            for name, data in files.items():
                assert (mnt / name).read_bytes() == data

                def enough_free() -> bool:
                    st = os.statvfs(state_dir)
                    return st.f_bavail * st.f_frsize >= 16 * MiB

                wait_for(enough_free, what="eviction down to --min-free")
            assert any(state(device_b, mnt / n) == "online" for n in files)
