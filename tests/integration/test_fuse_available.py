"""FUSE works here: a real pyfuse3 file system mounts, serves a read, and unmounts. CI
(where skipping fails the run) proves with it that the drive's tests really mount."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration import fusetools
from tests.integration.fusetools import requires_fuse

ROOT = Path(__file__).resolve().parents[2]


@requires_fuse
def test_a_pyfuse3_file_system_mounts_serves_a_read_and_unmounts(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.fusetools", str(mnt)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        fusetools.wait_for_mount(mnt, proc, timeout=5)
        assert fusetools.mount_fstype(mnt) == f"fuse.{fusetools.FSNAME}"
        assert os.listdir(mnt) == [fusetools.HELLO_NAME.decode()]
        assert (mnt / "hello.txt").read_bytes() == fusetools.HELLO_DATA
        with pytest.raises(OSError):  # mounted read-only
            (mnt / "hello.txt").write_bytes(b"x")
        fusetools.unmount(mnt)
        out, _ = proc.communicate(timeout=5)
        assert proc.returncode == 0, out.decode(errors="replace")
        assert fusetools.mount_fstype(mnt) is None
    finally:
        if fusetools.mount_fstype(mnt) is not None:
            fusetools.unmount(mnt, lazy=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_in_ci_fuse_is_available() -> None:
    # The skip guard (tests/conftest.py) fails skipped tests in CI; this names the cause once.
    if os.environ.get("CI"):
        assert fusetools.fuse_unavailable() is None


def test_without_dev_fuse_the_reason_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fusetools, "DEV_FUSE", tmp_path / "no-fuse")
    reason = fusetools.fuse_unavailable()
    assert reason is not None and reason.startswith(f"no {tmp_path / 'no-fuse'}:")
    assert "--device /dev/fuse --cap-add SYS_ADMIN" in reason


def test_without_fusermount3_the_reason_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not fusetools.DEV_FUSE.exists():
        monkeypatch.setattr(fusetools, "DEV_FUSE", tmp_path)  # gets past the first check
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = fusetools.fuse_unavailable()
    assert reason == f"no fusermount3 on PATH: {fusetools.PACKAGES}"
