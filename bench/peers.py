"""Install the peers: restic and borgbackup from Debian, borgbackup 1.4 from PyPI.

Debian packages are installed only when missing (needs root). borg 1.4 has no wheel on
PyPI, so it builds from source in its own virtual environment (bench/work/peers/…),
which needs a C compiler and a few -dev packages; the python `lz4` package for the
physical limits goes into the same environment, keeping the project's venv untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

APT_PEERS = ["restic", "borgbackup"]
BORG14_BUILD_DEPS = [
    "gcc",
    "pkg-config",
    "libacl1-dev",
    "liblz4-dev",
    "libzstd-dev",
    "libxxhash-dev",
    "libssl-dev",
]
BORG14_SPEC = "borgbackup==1.4.*"


@dataclass
class Peers:
    restic: str | None = None
    borg12: str | None = None  # Debian's borgbackup
    borg14: str | None = None  # PyPI borgbackup 1.4, own venv
    aux_python: str | None = None  # that venv's python (has lz4 if it installed)
    notes: list[str] = field(default_factory=list)


def _missing_debs(pkgs: list[str]) -> list[str]:
    missing = []
    for pkg in pkgs:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if "install ok installed" not in out.stdout:
            missing.append(pkg)
    return missing


def _apt_install(pkgs: list[str], log: Callable[[str], None]) -> None:
    if not pkgs:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing Debian packages {pkgs}; run as root or install them")
    log(f"apt-get install {' '.join(pkgs)}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "update", "-q"], env=env, check=True, timeout=900, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs],
        env=env,
        check=True,
        timeout=1800,
        stdout=subprocess.DEVNULL,
    )


def _python_dev_deb() -> list[str]:
    """python3-dev, when the interpreter is Debian's and lacks its headers."""
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return [] if include.exists() else ["python3-dev"]


def ensure_peers(peers_dir: Path, log: Callable[[str], None], want_borg14: bool = True) -> Peers:
    peers = Peers()
    if shutil.which("dpkg-query") is not None:
        deps = APT_PEERS + (BORG14_BUILD_DEPS + _python_dev_deb() if want_borg14 else [])
        _apt_install(_missing_debs(deps), log)
    peers.restic = shutil.which("restic")
    peers.borg12 = shutil.which("borg")
    if peers.restic is None or peers.borg12 is None:
        raise RuntimeError("restic and borg must be on PATH (apt-get install restic borgbackup)")
    if want_borg14:
        _ensure_borg14(peers_dir / "borg14-venv", peers, log)
    return peers


def _ensure_borg14(venv: Path, peers: Peers, log: Callable[[str], None]) -> None:
    borg, python = venv / "bin" / "borg", venv / "bin" / "python"
    have = (
        subprocess.run([borg, "--version"], capture_output=True, text=True).stdout
        if borg.exists()
        else ""
    )
    if not have.startswith("borg 1.4"):
        log(f"building {BORG14_SPEC} from PyPI into {venv} (about a minute)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run([*pip, BORG14_SPEC], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            peers.notes.append(f"borg 1.4 did not build ({done.stderr[-300:]}); left out")
            return
        lz4 = subprocess.run([*pip, "lz4"], capture_output=True, text=True, timeout=600)
        if lz4.returncode != 0:
            peers.notes.append("python lz4 did not install; lz4 limit skipped")
    peers.borg14 = str(borg)
    peers.aux_python = str(python)
