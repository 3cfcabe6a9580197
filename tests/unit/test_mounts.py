"""Finding AnySync's FUSE mounts in /proc/self/mountinfo (anysync.client.mounts)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from anysync.client import mounts
from anysync.client.mounts import MountEntry, parse_mountinfo

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
101 27 0:50 / /home/ann/My\\040Drive rw,nosuid shared:90 - fuse.anysync anysync rw,user_id=1000
102 27 0:51 / /mnt/snaps rw,nosuid,nodev,relatime - fuse.anysync-snapshots anysync ro,user_id=0
103 27 0:52 / /mnt/other\\011tab\\134back rw - fuse.sshfs host:/x rw
104 27 0:53 / /mnt/caf\\303\\251 rw master:3 propagate_from:2 - fuse.anysync anysync rw
this line is garbage
105 27 0:54 / /mnt/short rw -
"""


def test_parse_decodes_octal_escapes_and_skips_optional_fields() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert entries[2] == MountEntry(Path("/home/ann/My Drive"), "fuse.anysync", "anysync")
    assert entries[3] == MountEntry(Path("/mnt/snaps"), "fuse.anysync-snapshots", "anysync")
    assert entries[4].mount_point == Path("/mnt/other\ttab\\back")
    assert entries[4].fstype == "fuse.sshfs"
    # Two optional fields before the separator; an escaped UTF-8 name comes back whole.
    assert entries[5] == MountEntry(Path("/mnt/café"), "fuse.anysync", "anysync")


def test_parse_skips_malformed_lines() -> None:
    points = [e.mount_point for e in parse_mountinfo(MOUNTINFO)]
    assert Path("/mnt/short") not in points
    assert len(points) == 6


@pytest.fixture
def fake_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    f = tmp_path / "mountinfo"
    f.write_text(MOUNTINFO)
    monkeypatch.setattr(mounts, "MOUNTINFO", f)
    return f


def test_anysync_mounts_lists_drive_and_snapshot_mounts_only(fake_mountinfo: Path) -> None:
    assert mounts.anysync_mounts() == [
        Path("/home/ann/My Drive"),
        Path("/mnt/snaps"),
        Path("/mnt/café"),
    ]


def test_mount_type_is_for_the_exact_mount_point(fake_mountinfo: Path) -> None:
    assert mounts.mount_type(Path("/mnt/snaps")) == "fuse.anysync-snapshots"
    assert mounts.mount_type(Path("/mnt/snaps/")) == "fuse.anysync-snapshots"
    assert mounts.mount_type(Path("/mnt/snaps/inside")) is None
    assert mounts.mount_type(Path("/mnt/nothing")) is None
    assert mounts.is_anysync_mount(Path("/home/ann/My Drive"))
    assert not mounts.is_anysync_mount(Path("/mnt/other\ttab\\back"))
    assert not mounts.is_anysync_mount(Path("/proc"))


def test_mount_type_sees_the_topmost_of_stacked_mounts(fake_mountinfo: Path) -> None:
    fake_mountinfo.write_text(MOUNTINFO + "106 102 0:55 / /mnt/snaps rw - tmpfs tmpfs rw\n")
    assert mounts.mount_type(Path("/mnt/snaps")) == "tmpfs"
    assert not mounts.is_anysync_mount(Path("/mnt/snaps"))


def test_no_mountinfo_means_no_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "MOUNTINFO", tmp_path / "absent")
    assert mounts.anysync_mounts() == []
    assert mounts.mount_type(Path("/")) is None


def test_real_mountinfo_knows_the_root() -> None:
    assert mounts.mount_type(Path("/")) is not None


def test_wait_mounted_sees_a_mount_appear(fake_mountinfo: Path) -> None:
    calls = 0

    def alive() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            fake_mountinfo.write_text(
                MOUNTINFO + "107 27 0:56 / /mnt/new rw - fuse.anysync anysync rw\n"
            )
        return True

    assert mounts.wait_mounted(Path("/mnt/new"), timeout=10, alive=alive)
    assert calls == 3


def test_wait_mounted_gives_up_when_the_mounter_dies(fake_mountinfo: Path) -> None:
    start = time.monotonic()
    assert not mounts.wait_mounted(Path("/mnt/new"), timeout=30, alive=lambda: False)
    assert time.monotonic() - start < 5


def test_wait_mounted_times_out(fake_mountinfo: Path) -> None:
    start = time.monotonic()
    assert not mounts.wait_mounted(Path("/mnt/new"), timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 5


def test_lazy_unmount_of_a_plain_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(mounts.UnmountError) as err:
        mounts.lazy_unmount(tmp_path)
    assert str(err.value).startswith(f"cannot unmount {tmp_path}: ")
    assert "\n" not in str(err.value)
