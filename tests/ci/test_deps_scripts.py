"""scripts/deps-*.sh (`make deps`): a failed install fails; not being able to install
(not root, not Debian) is a skip outside CI and a failure in CI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("deps-*.sh"))
APT_SH = ROOT / "scripts" / "lib" / "apt.sh"


def _fake_bin(tmp_path: Path, **programs: str) -> Path:
    """A directory of shell scripts named after PROGRAMS, to put first in PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in programs.items():
        path = bin_dir / name.replace("_", "-")
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def _run(script: Path, bin_dir: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    env["APT_UPDATE_MAX_AGE"] = "0"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60
    )


def test_every_deps_script_is_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"deps-appliance.sh", "deps-ansible.sh", "deps-containers.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.parametrize("failing", ["apt-get update", "apt-get install"])
def test_a_failing_apt_get_fails_the_script(script: Path, failing: str, tmp_path: Path) -> None:
    # Root on Debian, every package missing, and apt-get failing at one step.
    calls = tmp_path / "apt-get.calls"
    bin_dir = _fake_bin(
        tmp_path,
        id="echo 0",
        dpkg_query="exit 1",
        apt_get=f'echo "$*" >> {calls}\n'
        f'case "$1" in {failing.split()[1]}) echo "E: broken" >&2; exit 100;; esac',
    )
    proc = _run(script, bin_dir, ci=False)
    assert proc.returncode != 0, proc.stderr
    assert failing in proc.stderr and "failed" in proc.stderr, proc.stderr
    assert calls.read_text().splitlines()[-1].startswith(failing.split()[1])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_not_root_is_a_skip_outside_ci_and_a_failure_in_ci(script: Path, tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, id="echo 1000", apt_get="echo called >&2; exit 100")
    outside = _run(script, bin_dir, ci=False)
    assert outside.returncode == 0, outside.stderr
    assert "skipping" in outside.stderr
    in_ci = _run(script, bin_dir, ci=True)
    assert in_ci.returncode == 1, in_ci.stderr
    assert "CI is set" in in_ci.stderr
    assert "called" not in outside.stderr + in_ci.stderr


def test_installed_packages_are_not_reinstalled(tmp_path: Path) -> None:
    bin_dir = _fake_bin(
        tmp_path,
        id="echo 0",
        dpkg_query="echo 'install ok installed'",
        apt_get="echo called >&2; exit 100",
    )
    proc = _run(SCRIPTS[0], bin_dir, ci=True)
    assert proc.returncode == 0, proc.stderr
    assert "called" not in proc.stderr


def test_the_real_apt_get_failing_on_an_unknown_package_is_an_error() -> None:
    """As root (CI), the real apt-get: an unknown package is a non-zero exit."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run apt-get")
    proc = subprocess.run(
        ["bash", "-c", f'source "{APT_SH}"; apt_install_missing test no-such-package-zzz'],
        # Skip `apt-get update` whenever package lists exist: the point is the install.
        env={**os.environ, "APT_UPDATE_MAX_AGE": str(10**10)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "apt-get install no-such-package-zzz failed" in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_script_with_everything_installed_succeeds(script: Path, tmp_path: Path) -> None:
    # Root on Debian with every package installed: the script must run to its end (a
    # helper it calls that the library lost would fail here, not only on a fresh machine).
    bin_dir = _fake_bin(
        tmp_path,
        id="echo 0",
        dpkg_query="echo 'install ok installed'",
        apt_get="echo unexpected apt-get >&2; exit 100",
        mount="exit 0",
        update_binfmts="exit 0",
    )
    proc = _run(script, bin_dir, ci=True)
    assert proc.returncode == 0, proc.stderr
    assert "command not found" not in proc.stderr
