"""Telling indexers and thumbnailers apart from people's programs, on real processes: copies of
/bin/sleep (or /bin/cat) under a scanner's name, and a comm renamed the way the kernel cuts it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from anysync.client.drive.scanners import scanner_name


@contextmanager
def running(argv: list[str]) -> Iterator[int]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        # Popen returns when the exec has closed the child's close-on-exec files, a moment
        # before the kernel sets up the new command line.
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def program(tmp_path: Path, name: str, original: str = "/bin/sleep") -> str:
    path = tmp_path / name
    shutil.copy(original, path)
    return str(path)


@pytest.mark.parametrize(
    "name",
    [
        "tracker-extract-3",
        "tracker-miner-fs-3",
        "localsearch-3",
        "baloo_file",
        "baloo_file_extractor",
        "gnome-desktop-thumbnailer",
        "gdk-pixbuf-thumbnailer",
        "evince-thumbnailer",
        "totem-video-thumbnailer",
        "ffmpegthumbnailer",
        "gnome-epub-thumbnailer",
        "tumblerd",
        "updatedb",
        "updatedb.plocate",
        "plocate",
        "mlocate",
    ],
)
def test_a_scanner_is_recognised_by_its_program(tmp_path: Path, name: str) -> None:
    with running([program(tmp_path, name), "30"]) as pid:
        assert scanner_name(pid) == name


@pytest.mark.parametrize("name", ["sleep", "nautilus", "dolphin", "tracker", "bwrap"])
def test_other_programs_are_not_scanners(tmp_path: Path, name: str) -> None:
    # bwrap alone is every Flatpak app; the thumbnailer it starts is a process of its own.
    with running([program(tmp_path, name), "30"]) as pid:
        assert scanner_name(pid) is None


def test_the_system_sleep_is_not_a_scanner() -> None:
    with running(["sleep", "30"]) as pid:
        assert scanner_name(pid) is None


def test_a_comm_cut_to_15_bytes_still_matches(tmp_path: Path) -> None:
    # The executable is python and argv[0] too: only the comm tells, and the kernel keeps
    # 15 bytes of it ("gdk-pixbuf-thum"), as it does for a sandboxed thumbnailer whose
    # /proc/PID/exe cannot be read.
    code = (
        "open('/proc/self/comm', 'w').write('gdk-pixbuf-thumbnailer'); import time; time.sleep(30)"
    )
    with running([sys.executable, "-c", code]) as pid:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/comm").read_text() != "gdk-pixbuf-thum\n":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert scanner_name(pid) == "gdk-pixbuf-thum"
        assert scanner_name(pid, ["gdk-pixbuf-thumbnailer"]) == "gdk-pixbuf-thum"
        assert scanner_name(pid, ["gdk-pixbuf-csv*"]) is None


def test_the_kio_thumbnail_worker_is_named_by_its_plugin(tmp_path: Path) -> None:
    # kioworker /usr/lib/.../kf6/kio/thumbnail.so thumbnail local:/run/user/...: a copy of cat
    # named kioworker, blocked reading a FIFO named like the plugin.
    plugins = tmp_path / "kf6" / "kio"
    plugins.mkdir(parents=True)
    launcher = program(tmp_path, "kioworker", "/bin/cat")
    for plugin, expected in [("thumbnail.so", "thumbnail.so"), ("file.so", None)]:
        os.mkfifo(plugins / plugin)
        with running([launcher, str(plugins / plugin), "thumbnail"]) as pid:
            assert scanner_name(pid) == expected


def test_patterns_can_be_chosen(tmp_path: Path) -> None:
    with running([program(tmp_path, "my-indexer"), "30"]) as pid:
        assert scanner_name(pid) is None
        assert scanner_name(pid, ["my-index*"]) == "my-indexer"


def test_a_process_that_is_gone_is_not_a_scanner(tmp_path: Path) -> None:
    with running([program(tmp_path, "tracker-extract-3"), "30"]) as pid:
        pass  # killed and reaped on leaving
    assert scanner_name(pid) is None
    assert scanner_name(-1) is None
