"""The first start of a new server home (issue #16): `anysync-server run` prints the
exact `anysync signup` line, with a first invite, and that line works as printed."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
from pathlib import Path

from tests.integration.harness import CLIENT, SERVER, base_env


def _start(home: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """Serve `home` on a free port; the lines printed up to the signup line (or to the
    fingerprint line when there is none)."""
    proc = subprocess.Popen(
        [SERVER, "--home", str(home), "run", "--listen", "127.0.0.1:0"],
        env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("TLS certificate fingerprint"):
        line = proc.stdout.readline()
        assert line, f"the server ended: {lines}"
        lines.append(line.rstrip("\n"))
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def test_the_first_start_prints_a_signup_line_that_works(tmp_path: Path) -> None:
    home = tmp_path / "server-home"
    proc, lines = _start(home)
    try:
        assert lines[0] == f"initialised new server home at {home}"
        assert proc.stdout is not None
        while "anysync signup" not in (line := proc.stdout.readline()):
            assert line, "no signup line"
        argv = shlex.split(line.replace("YOU@EXAMPLE.ORG", "first@example.org"))
        assert argv[:2] == ["anysync", "signup"] and "--invite" in argv
        env = base_env() | {
            "ANYSYNC_HOME": str(tmp_path / "client"),
            "ANYSYNC_PASSWORD": "correct horse battery staple",
        }
        signup = subprocess.run(
            [CLIENT, *argv[1:]], env=env, capture_output=True, text=True, timeout=120
        )
        assert signup.returncode == 0, signup.stderr
    finally:
        _stop(proc)

    # The next start of the same home: no new invite, no signup line.
    proc, lines = _start(home)
    out = _stop(proc)
    assert "initialised" not in "\n".join(lines)
    assert "anysync signup" not in out and "--invite" not in out


def test_a_first_start_that_cannot_serve_still_welcomes_at_the_next(tmp_path: Path) -> None:
    home = tmp_path / "server-home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = subprocess.run(
            [SERVER, "--home", str(home), "run", "--listen", f"127.0.0.1:{port}"],
            env=base_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert failed.returncode != 0 and "anysync signup" not in failed.stdout
    proc, lines = _start(home)
    out = _stop(proc)
    assert "initialised" not in "\n".join(lines)  # the home was made by the failed start
    assert "anysync signup" in out and "--invite" in out
