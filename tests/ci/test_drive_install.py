"""The drive's install (scripts/deps-fuse.sh, `make install`): the drive extra where FUSE
and a compiler are at hand, a loud line where they are not, the venv reinstalled when
that changes, and CI failing rather than going without."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A copy of what `make install` reads, with fake programs first in PATH (bin/): a
    user (not root) who has fusermount3, gcc and, while `fuse3.pc` exists, libfuse3-dev;
    a fake Python whose venv's pip logs its arguments to pip.log."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    fakes = {
        "id": "echo 1000",
        "apt-get": "echo apt-get called >&2; exit 100",
        "fusermount3": "exit 0",
        "gcc": "exit 0",
        "pkg-config": f'[ -e "{tmp_path}/fuse3.pc" ]',
        # -m venv DIR makes DIR/bin/pip; -c (the Python.h check) succeeds.
        "python": f"""if [ "$1" = -m ]; then mkdir -p "$3/bin"
  printf '#!/bin/sh\\necho "$*" >> {tmp_path}/pip.log\\n' > "$3/bin/pip"; chmod +x "$3/bin/pip"
fi""",
    }
    (tmp_path / "bin").mkdir()
    for name, body in fakes.items():
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / "bin" / name).chmod(0o755)
    (tmp_path / "fuse3.pc").touch()
    return tmp_path


def _make(box: Path, ci: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MAKEFLAGS", "MAKELEVEL")}
    env["PATH"] = f"{box / 'bin'}:{env['PATH']}"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        ["make", "--no-print-directory", "install", f"PYTHON={box / 'bin' / 'python'}"],
        cwd=box,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _installs(box: Path) -> list[str]:
    """The `pip install -e` arguments since the last call."""
    log = box / "pip.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return [line.split()[-1] for line in lines if line.startswith("install --quiet -e")]


def test_the_venv_has_the_drive_where_it_builds_and_is_reinstalled_when_that_changes(
    box: Path,
) -> None:
    first = _make(box)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _installs(box) == [".[dev,drive]"]
    assert "***" not in first.stderr

    again = _make(box)
    assert again.returncode == 0 and _installs(box) == [], again.stdout + again.stderr

    (box / "fuse3.pc").unlink()  # libfuse3-dev removed: no drive, and a loud line why
    without = _make(box)
    assert without.returncode == 0, without.stdout + without.stderr
    assert _installs(box) == [".[dev]"]
    assert "*** The Smart Sync drive" in without.stderr
    assert "libfuse3's headers" in without.stderr and "NOT installed" in without.stderr
    assert "sudo apt-get install fuse3 libfuse3-dev pkg-config" in without.stderr
    assert "apt-get called" not in without.stderr  # not root: installs nothing

    assert _make(box).returncode == 0 and _installs(box) == []
    (box / "fuse3.pc").touch()
    assert _make(box).returncode == 0 and _installs(box) == [".[dev,drive]"]


def test_in_ci_a_machine_that_cannot_build_the_drive_fails_the_install(box: Path) -> None:
    (box / "fuse3.pc").unlink()
    proc = _make(box, ci=True)
    assert proc.returncode != 0
    assert "CI is set, so the drive and its tests must be installed" in proc.stderr
    assert "libfuse3's headers" in proc.stderr
    assert _installs(box) == []


def test_as_root_the_missing_packages_are_installed_first(box: Path) -> None:
    # Root on Debian without libfuse3-dev: apt-get installs it (and makes fuse3.pc).
    (box / "fuse3.pc").unlink()
    (box / "bin" / "id").write_text("#!/bin/sh\necho 0\n")
    (box / "bin" / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (box / "bin" / "apt-get").write_text(
        f'#!/bin/sh\necho "apt-get $*" >> {box}/apt.log\n'
        f'[ "$1" = install ] && touch {box}/fuse3.pc\nexit 0\n'
    )
    for name in ("dpkg-query", "apt-get"):
        (box / "bin" / name).chmod(0o755)
    proc = _make(box)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = (box / "apt.log").read_text().splitlines()[-1]
    assert installed.startswith("apt-get install") and "libfuse3-dev" in installed
    assert _installs(box) == [".[dev,drive]"]


def test_check_names_what_is_missing_and_fails_when_pyfuse3_cannot_build(box: Path) -> None:
    def check() -> subprocess.CompletedProcess[str]:
        # Only the fakes and dirname on PATH: the machine's own fusermount3 is not.
        tools = box / "tools"
        tools.mkdir(exist_ok=True)
        if not (tools / "dirname").exists():
            (tools / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
        return subprocess.run(
            [shutil.which("bash") or "/bin/bash", str(box / "scripts" / "deps-fuse.sh"), "--check"],
            env={"PATH": f"{box / 'bin'}:{tools}", "PYTHON": str(box / "bin" / "python")},
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = check()
    assert ok.returncode == 0 and ok.stdout == "", ok.stdout + ok.stderr
    (box / "fuse3.pc").unlink()
    (box / "bin" / "fusermount3").unlink()
    missing = check()
    assert missing.returncode == 1, missing.stderr
    assert missing.stdout.splitlines() == [
        "fusermount3, to mount (Debian: fuse3)",
        "libfuse3's headers, found through pkg-config (Debian: libfuse3-dev pkg-config)",
    ]
