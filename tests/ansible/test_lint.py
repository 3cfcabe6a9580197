"""yamllint, ansible-lint (production profile, offline) and a syntax check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ansible.targets import ANSIBLE_DIR, BIN, IMAGE_DIR, REPO


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists() and shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return str(path) if path.exists() else name


def _check(argv: list[str], cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout}\n{proc.stderr}"


def test_yamllint() -> None:
    _check([_tool("yamllint"), "--strict", "-c", str(ANSIBLE_DIR / ".yamllint"),
            str(ANSIBLE_DIR), str(IMAGE_DIR)], REPO)  # fmt: skip


def test_ansible_lint_production_profile() -> None:
    _check([_tool("ansible-lint"), "--offline", "--profile", "production", "site.yml",
            "roles", str(IMAGE_DIR / "image.yml")], ANSIBLE_DIR)  # fmt: skip


def test_playbooks_pass_the_syntax_check() -> None:
    inventory = str(ANSIBLE_DIR / "inventory" / "example.yml")
    for playbook in (ANSIBLE_DIR / "site.yml", IMAGE_DIR / "image.yml"):
        _check([_tool("ansible-playbook"), "--syntax-check", "-i", inventory, str(playbook)],
               ANSIBLE_DIR)  # fmt: skip


def test_shell_scripts_are_strict() -> None:
    for script in [*IMAGE_DIR.glob("*.sh"), *(REPO / "scripts").glob("deps-[ai]*.sh")]:
        assert "set -euo pipefail" in script.read_text(), script
