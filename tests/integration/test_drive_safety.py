"""The drive when things go wrong: a killed daemon, no server, a server that rolls the
ref back, a remote change under an open file, an unmount with uncommitted changes."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from anysync.faults import ENV as FAULT_ENV
from tests.integration.drive import (
    daemon_pid,
    mounted,
    publish_raw_root,
    share_folder,
    state,
    status,
    wait_for,
)
from tests.integration.fusetools import requires_fuse
from tests.integration.harness import Client, Server
from tests.integration.test_bad_input import tmpfs

pytestmark = requires_fuse

MiB = 1 << 20


def _killed(client: Client, mnt: Path) -> None:
    pid = daemon_pid(client)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the daemon's end")


def test_kill_9_mid_write_keeps_what_was_fsynced(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    synced = os.urandom(6 * MiB)
    with mounted(device_b, "docs", mnt):
        fd = os.open(mnt / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, synced)
        os.fsync(fd)
        os.write(fd, os.urandom(MiB))  # not fsynced: may or may not survive
        _killed(device_b, mnt)
        with pytest.raises(OSError) as lost:
            os.write(fd, b"more")
        assert lost.value.errno == errno.ENOTCONN
        with contextlib.suppress(OSError):
            os.close(fd)  # ENOTCONN too
        # The mount is dead ("Transport endpoint is not connected"); mounting again
        # recovers it and the journaled file is committed.
        device_b.run("drive", "mount", "docs", str(mnt))
        assert (mnt / "big.bin").read_bytes()[: len(synced)] == synced
        device_b.run("drive", "flush", str(mnt))
        assert status(device_b, mnt)["pending_changes"] == 0
    device_a.run("sync", "run")
    assert (folder / "big.bin").read_bytes()[: len(synced)] == synced
    assert (folder / "keep.txt").read_text() == "kept"


def test_killed_after_the_ref_moved_commits_once(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    db = sqlite3.connect(server.home / "metadata.db")

    def ref_version() -> int:
        (version,) = db.execute("SELECT version FROM refs").fetchone()
        return int(version)

    device_b.run("drive", "mount", "docs", str(mnt), env={FAULT_ENV: "drive.ref-moved"})
    try:
        before = ref_version()
        (mnt / "new.txt").write_text("committed, then killed")
        flush = device_b.run("drive", "flush", str(mnt), check=False)
        assert flush.returncode != 0  # the daemon died under it
        assert ref_version() == before + 1  # ...after the ref moved
        device_b.run("drive", "mount", "docs", str(mnt))
        device_b.run("drive", "flush", str(mnt))
        st = status(device_b, mnt)
        assert st["pending_changes"] == 0 and st["commits"] == 0  # nothing committed twice
        assert ref_version() == before + 1
        assert (mnt / "new.txt").read_text() == "committed, then killed"
    finally:
        device_b.run("drive", "umount", str(mnt), "--force", check=False)
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        db.close()
    device_a.run("sync", "run")
    assert (folder / "new.txt").read_text() == "committed, then killed"


def test_offline_browse_cached_reads_and_queued_writes(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "cached.txt").write_text("read before going offline")
    (folder / "sub" / "remote.bin").write_bytes(os.urandom(MiB))
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt, "--offline-timeout", "2"):
        assert (mnt / "cached.txt").read_text() == "read before going offline"
        server.stop()
        listing = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True)
        assert listing.returncode == 0 and "remote.bin" in listing.stdout
        assert (mnt / "cached.txt").read_text() == "read before going offline"
        started = time.monotonic()
        with pytest.raises(OSError) as failed:
            (mnt / "sub" / "remote.bin").read_bytes()
        assert failed.value.errno == errno.EIO
        assert time.monotonic() - started < 2 + 5
        (mnt / "offline.txt").write_text("written offline")
        flush = device_b.run("drive", "flush", str(mnt), check=False)
        assert flush.returncode != 0 and "could not be committed" in flush.stderr
        server.start()
        wait_for(
            lambda: status(device_b, mnt)["pending_changes"] == 0, 30, "the offline write committed"
        )
        assert (mnt / "sub" / "remote.bin").read_bytes() == (
            folder / "sub" / "remote.bin"
        ).read_bytes()
    device_a.run("sync", "run")
    assert (folder / "offline.txt").read_text() == "written offline"


def test_remote_change_while_a_file_is_open(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    old = os.urandom(2 * MiB)
    (folder / "doc.bin").write_bytes(old)
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        with (mnt / "doc.bin").open("rb") as reader:
            first = reader.read(4096)
            new = os.urandom(2 * MiB)
            (folder / "doc.bin").write_bytes(new)
            device_a.run("sync", "run")
            wait_for(lambda: (mnt / "doc.bin").read_bytes() == new, what="the new version")
            assert first + reader.read() == old  # the open handle keeps its version
        assert (mnt / "doc.bin").read_bytes() == new


def test_a_rollback_served_by_the_server_is_refused(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "one.txt").write_text("1")
    share_folder(server, device_a, device_b, folder)
    db = sqlite3.connect(server.home / "metadata.db")
    old = db.execute("SELECT name, commit_id FROM refs").fetchone()
    (folder / "two.txt").write_text("2")
    device_a.run("sync", "run")
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        assert (mnt / "two.txt").read_text() == "2"
        with db:
            db.execute(
                "UPDATE refs SET commit_id = ?, version = version + 1 WHERE name = ?",
                (old[1], old[0]),
            )
        device_b.run("drive", "flush", str(mnt), check=False)
        st = status(device_b, mnt)
        assert "rollback" in str(st["last_error"])
        assert (mnt / "two.txt").read_text() == "2"  # still served: nothing deleted
    db.close()


def test_umount_with_uncommitted_changes_refuses_offline_and_keeps_them(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    device_b.run("drive", "mount", "docs", str(mnt), "--offline-timeout", "1")
    server.stop()
    (mnt / "pending.txt").write_text("not committed yet")
    refused = device_b.run("drive", "umount", str(mnt), check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert state(device_b, mnt / "pending.txt") == "dirty"
    device_b.run("drive", "umount", str(mnt), "--force")
    server.start()
    with mounted(device_b, "docs", mnt):
        assert (mnt / "pending.txt").read_text() == "not committed yet"
        device_b.run("drive", "flush", str(mnt))
    device_a.run("sync", "run")
    assert (folder / "pending.txt").read_text() == "not committed yet"


def test_disk_full_in_the_cache_fails_cleanly_and_loses_nothing(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "huge.bin").write_bytes(os.urandom(12 * MiB))
    (folder / "small.txt").write_text("fits")
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    # The drive's state and cache on a file system with room for 6 MiB.
    with tmpfs(device_b.home / "drive", "size=6m"):
        with mounted(device_b, "docs", mnt, "--min-free", "0"):
            with pytest.raises(OSError) as full:
                (mnt / "huge.bin").read_bytes()
            assert full.value.errno == errno.EIO
            chunks = device_b.home / "drive"
            assert not [p for p in chunks.rglob("*") if ".tmp" in p.name]  # no partial chunk
            assert (mnt / "small.txt").read_text() == "fits"
            fd = os.open(mnt / "written.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            with pytest.raises(OSError) as no_space:
                for _ in range(10):
                    os.write(fd, os.urandom(MiB))
            assert no_space.value.errno == errno.ENOSPC
            os.close(fd)
            (mnt / "written.bin").unlink()  # the user makes room; nothing else was lost
            (mnt / "after.txt").write_text("written after the disk was full")
            device_b.run("drive", "flush", str(mnt))
    device_a.run("sync", "run")
    assert (folder / "after.txt").read_text() == "written after the disk was full"
    assert (folder / "small.txt").read_text() == "fits"
    assert not (folder / "written.bin").exists()


def test_a_hostile_name_in_a_new_head_is_refused_and_the_old_head_served(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "a-docs"
    folder.mkdir()
    (folder / "fine.txt").write_text("fine")
    share_folder(server, device_a, device_b, folder)
    mnt = tmp_path / "drive"
    with mounted(device_b, "docs", mnt):
        assert (mnt / "fine.txt").read_text() == "fine"
        # A writer with the account's keys (a compromised device) publishes a head
        # whose root holds an entry named "..".
        publish_raw_root(device_a, "docs", b"..")
        device_b.run("drive", "flush", str(mnt), check=False)
        wait_for(lambda: "hostile" in str(status(device_b, mnt)["last_error"]), what="refusal")
        assert sorted(os.listdir(mnt)) == ["fine.txt"]
        assert (mnt / "fine.txt").read_text() == "fine"
        assert not (tmp_path / "fine.txt").exists()
