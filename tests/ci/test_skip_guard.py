"""tests/conftest.py: in CI, a skipped test that is not on ALLOWED_SKIPS fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = next(iter(conftest.ALLOWED_SKIPS))

SAMPLE = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("no frobnicator")

@pytest.mark.skipif(True, reason="never here")
def test_skipped_by_mark():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    if n == 2:
        pytest.skip("two")
"""


def _pytest(
    tmp_path: Path, *args: str, ci: bool, files: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """pytest in `tmp_path` on `files`, with the hooks of tests/conftest.py as a plugin."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-q", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_unexpected_skips_ignores_the_allowed_ones_and_their_parameters() -> None:
    assert conftest.unexpected_skips([ALLOWED, f"{ALLOWED}[x]", "tests/a.py::b"]) == [
        "tests/a.py::b"
    ]


def test_in_ci_an_unexpected_skip_fails_the_run_and_is_named(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, ci=True, files={"test_sample.py": SAMPLE})
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout and "3 skipped" in proc.stdout
    assert "not on ALLOWED_SKIPS" in proc.stdout
    for line in (
        "SKIPPED test_sample.py::test_skips: Skipped: no frobnicator",
        "SKIPPED test_sample.py::test_skipped_by_mark: Skipped: never here",
        "SKIPPED test_sample.py::test_param[2]: Skipped: two",
        "3 unexpected skip(s): the run fails",
    ):
        assert line in proc.stdout, proc.stdout


def test_outside_ci_a_skip_is_only_a_skip(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, ci=False, files={"test_sample.py": SAMPLE})
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    assert "ALLOWED_SKIPS" not in proc.stdout


def test_a_partial_run_fails_only_for_the_skips_that_happen(tmp_path: Path) -> None:
    files = {"test_sample.py": SAMPLE}
    selected = _pytest(tmp_path, "-k", "passes or param", ci=True, files=files)
    assert selected.returncode == pytest.ExitCode.TESTS_FAILED, selected.stdout
    assert "1 unexpected skip(s)" in selected.stdout
    assert "test_param[2]" in selected.stdout and "test_skips" not in selected.stdout
    no_skips = _pytest(tmp_path, "-k", "passes or param and 1", ci=True, files=files)
    assert no_skips.returncode == pytest.ExitCode.OK, no_skips.stdout


def test_an_allowed_skip_passes_in_ci(tmp_path: Path) -> None:
    path, name = ALLOWED.split("::")
    text = (
        f"import pytest\n\n@pytest.mark.skipif(True, reason='allowed')\ndef {name}():\n    pass\n"
    )
    proc = _pytest(tmp_path, path, ci=True, files={path: text})
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout


def test_a_module_skipped_as_a_whole_fails_in_ci(tmp_path: Path) -> None:
    text = "import pytest\n\npytest.skip('no module', allow_module_level=True)\n"
    proc = _pytest(tmp_path, ci=True, files={"test_whole.py": text})
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout + proc.stderr
    assert "SKIPPED test_whole.py: Skipped: no module" in proc.stdout


def test_a_failing_run_keeps_its_exit_status(tmp_path: Path) -> None:
    text = "import pytest\n\ndef test_fails():\n    assert False\n\n"
    text += "def test_skips():\n    pytest.skip('x')\n"
    proc = _pytest(tmp_path, ci=True, files={"test_fail.py": text})
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout
    assert "1 unexpected skip(s)" in proc.stdout
