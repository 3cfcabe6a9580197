"""Shared test setup: an isolated environment and a weak KDF (tests only, like borg);
and, in CI, a run with a skipped test that is not on ALLOWED_SKIPS fails."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests import s3server
from tests.s3server import S3Server


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ANYSYNC_PASSWORD", raising=False)
    monkeypatch.delenv("ANYSYNC_HOME", raising=False)
    monkeypatch.delenv("ANYSYNC_SERVER_HOME", raising=False)
    yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3 server (SeaweedFS) for the whole test session."""
    server = s3server.start(tmp_path_factory.mktemp("s3") / "data")
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- skips in CI

# The only tests CI (the CI environment variable set: .ci/run) may skip; any other skip
# fails the run, since a skipped test proves nothing. Node ids (without parameters),
# each with a comment saying why it may skip.
ALLOWED_SKIPS = {
    # The 32-bit Pi image: another full image build and emulated boot (long), for
    # `make test-image-armhf`; the arm64 image test runs the same code in `make test`.
    "tests/image/test_image.py::test_armhf_image_builds_and_boots_to_healthy_services",
}

_skipped: dict[str, str] = {}  # node id: reason, of every skip in this session


def unexpected_skips(skipped: Iterable[str]) -> list[str]:
    """The node ids in `skipped` that ALLOWED_SKIPS does not name."""
    return [n for n in skipped if n.split("[")[0] not in ALLOWED_SKIPS]


def _skip_guard_active() -> bool:
    return bool(os.environ.get("CI"))


def _record_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        _skipped.setdefault(report.nodeid or "(collection)", str(reason))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)  # a module skipped as a whole (pytest.skip(allow_module_level))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A worse status (failures, an interrupted run) stays; "no tests ran" is one when
    # a whole module was skipped.
    passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    if _skip_guard_active() and unexpected_skips(_skipped) and exitstatus in passing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    unexpected = unexpected_skips(_skipped)
    if not (_skip_guard_active() and unexpected):
        return
    terminalreporter.section("skipped in CI, and not on ALLOWED_SKIPS (tests/conftest.py)")
    for nodeid in unexpected:
        terminalreporter.line(f"SKIPPED {nodeid}: {_skipped[nodeid]}", red=True)
    terminalreporter.line(f"{len(unexpected)} unexpected skip(s): the run fails", red=True)
