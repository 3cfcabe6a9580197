"""deploy/supervisor as-is (supervisord's own %(ENV_…)s expansion): a FATAL program
stops supervisord through stop-on-fatal.py; and run.sh's command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from tests.integration.harness import base_env

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
BROKEN = """\
[program:broken]
command=/bin/false
startsecs=1
startretries=0
autorestart=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
"""


def test_a_fatal_program_stops_supervisord(tmp_path: Path) -> None:
    conf = tmp_path / "supervisor"
    shutil.copytree(REPO / "deploy" / "supervisor", conf)
    for real in ("objectstore.conf", "anysync-server.conf"):
        (conf / "conf.d" / real).unlink()
    (conf / "conf.d" / "broken.conf").write_text(BROKEN)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = base_env() | {
        "ANYSYNC_RUN_DIR": str(run_dir),
        "ANYSYNC_LOG_DIR": str(tmp_path),
        "ANYSYNC_VENV": str(VENV),
    }
    log = tmp_path / "supervisord.log"
    with open(log, "ab") as out:  # appended, as run.sh does
        proc = subprocess.Popen(
            [str(VENV / "bin" / "supervisord"), "-c", str(conf / "supervisord.conf")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        code = proc.wait(timeout=30)  # it stops by itself, or the test fails
    finally:
        if proc.poll() is None:  # kill it and whatever it started
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text
    assert "gave up: broken entered FATAL state" in text
    assert "stop-on-fatal: broken is FATAL; shutting supervisord down" in text
    assert not (run_dir / "supervisor.sock").exists()


def _run_sh(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = base_env() | {"ANYSYNC_SERVER_HOME": str(home), "ANYSYNC_VENV": str(VENV)}
    return subprocess.run(
        [str(REPO / "run.sh"), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_run_sh_command_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    helped = _run_sh("help", home=home)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: ./run.sh")
    assert str(home) in helped.stdout
    wrong = _run_sh("frobnicate", home=home)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: ./run.sh")
    for command in ("status", "stop"):
        unconfigured = _run_sh(command, home=home)
        assert unconfigured.returncode == 1
        assert "no appliance configuration yet: run ./run.sh first" in unconfigured.stderr
    assert not home.exists()  # neither touched the home
    assert os.access(REPO / "run.sh", os.X_OK)
