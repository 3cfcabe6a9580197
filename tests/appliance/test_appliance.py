"""The appliance end to end, with real processes: run.sh configures a home, starts
supervisord with SeaweedFS and anysync-server on loopback, the real CLI backs up and
restores through it, the object store is killed mid-backup and restarted by
supervisord, and after `run.sh stop` and a fresh start nothing is lost."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import CLIENT, Client, Server, base_env, make_tree, snapshot_of
from tests.ports import free_port, free_port_range

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
EMAIL = "owner@example.org"


@dataclass
class Appliance:
    home: Path
    env: dict[str, str]
    port: int
    metrics_port: int

    def run_sh(
        self, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(REPO / "run.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"run.sh {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                f"stderr:\n{proc.stderr}\nlog:\n{self.log_tail()}"
            )
        return proc

    def pid(self, program: str) -> int:
        return int(self.run_sh("ctl", "pid", program).stdout)

    def state(self, program: str) -> str:
        out = self.run_sh("ctl", "status", program, check=False).stdout.split()
        return out[1] if len(out) > 1 else "?"

    def bytes_in(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        m = re.search(r'^anysync_bytes_total\{direction="in"\} (\S+)$', text, re.M)
        assert m, text
        return float(m.group(1))

    def log_tail(self) -> str:
        log = self.home / "logs" / "appliance.log"
        return "\n".join(log.read_text().splitlines()[-40:]) if log.exists() else "(no log)"

    def processes(self) -> list[psutil.Process]:
        """Every process of this appliance: each names the home on its command line."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if str(self.home) in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        return found


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    home = tmp_path / "appliance-home"
    app = Appliance(
        home,
        base_env()
        | {
            "ANYSYNC_SERVER_HOME": str(home),
            "ANYSYNC_VENV": str(VENV),
            "ANYSYNC_OBJECT_STORE": "seaweedfs",
            "ANYSYNC_BIND": "127.0.0.1",
            "ANYSYNC_S3_BIND": "127.0.0.1",
            "ANYSYNC_PORT": str(free_port()),
            "ANYSYNC_S3_PORT": str(free_port()),
            "ANYSYNC_METRICS_PORT": str(free_port()),
            "ANYSYNC_WEED_BASE_PORT": str(free_port_range(5, twins=10000)),
            "ANYSYNC_START_TIMEOUT": "60",
        },
        port=0,
        metrics_port=0,
    )
    app.port = int(app.env["ANYSYNC_PORT"])
    app.metrics_port = int(app.env["ANYSYNC_METRICS_PORT"])
    try:
        yield app
    finally:
        # Even after a failure: supervisord and all it started, by pid.
        if (home / "run" / "supervisor.sock").exists():
            subprocess.run(
                [str(REPO / "run.sh"), "stop"], env=app.env, capture_output=True, timeout=120
            )
        for proc in app.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def test_appliance_backup_restore_store_crash_and_restart(
    appliance: Appliance, tmp_path: Path
) -> None:
    # First run: configure only.
    out = appliance.run_sh().stdout
    assert "configured the AnySync appliance" in out
    assert appliance.processes() == []
    config = tomllib.loads((appliance.home / "server.toml").read_text())
    assert config["storage"]["kind"] == "s3"
    assert config["storage"]["endpoint"] == f"http://127.0.0.1:{appliance.env['ANYSYNC_S3_PORT']}"
    for secret in ("s3.secret", "objectstore/seaweedfs-s3.json", "server.secret"):
        assert stat.S_IMODE((appliance.home / secret).stat().st_mode) == 0o600, secret
    s3_secret = (appliance.home / "s3.secret").read_text()
    rendered = "".join(p.read_text() for p in (appliance.home / "supervisor").rglob("*.conf"))
    assert s3_secret not in rendered
    assert not re.search(r"%\(ENV_\w+\)s", rendered)  # every parameter filled in

    # Second run: start, healthy, status.
    out = appliance.run_sh().stdout
    assert "anysync-server: healthy" in out
    assert re.search(r"^objectstore +RUNNING", out, re.M), out
    assert re.search(r"^anysync-server +RUNNING", out, re.M), out
    assert "already running" in appliance.run_sh().stdout  # idempotent

    server = Server(appliance.home, port=appliance.port)
    device = Client(tmp_path / "device")
    device.signup(server, EMAIL)
    source = tmp_path / "documents"
    make_tree(source, small_files=150, big_mib=2)
    device.run("backup", str(source))
    device.run("restore", "latest", "--target", str(tmp_path / "restored-1"))
    assert snapshot_of(tmp_path / "restored-1" / source.name) == snapshot_of(source)

    # The object store dies in the middle of a backup; supervisord starts it again and
    # the backup goes on to the end.
    (source / "large.bin").write_bytes(os.urandom(32 << 20))
    weed = appliance.pid("objectstore")
    before = appliance.bytes_in()
    env = base_env() | {"ANYSYNC_HOME": str(device.home), "ANYSYNC_PASSWORD": device.password}
    backup = subprocess.Popen(
        [CLIENT, "backup", str(source)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while appliance.bytes_in() == before:  # the first pack of this backup is in
            assert backup.poll() is None, f"backup ended before the kill:\n{backup.stdout}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert backup.poll() is None, "backup ended before the kill: make it bigger"
        os.kill(weed, signal.SIGKILL)
        output, _ = backup.communicate(timeout=240)
    finally:
        if backup.poll() is None:
            backup.kill()
            backup.wait()
    assert backup.returncode == 0, f"{output}\nlog:\n{appliance.log_tail()}"
    # The backup may finish while supervisord still counts the new process's startsecs.
    deadline = time.monotonic() + 30
    while appliance.state("objectstore") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert appliance.state("objectstore") == "RUNNING"
    assert appliance.pid("objectstore") != weed
    log = (appliance.home / "logs" / "appliance.log").read_text()
    assert "exited: objectstore (terminated by SIGKILL; not expected)" in log

    # Stop (SIGTERM through supervisord): everything exits.
    pids = [appliance.pid("objectstore"), appliance.pid("anysync-server")]
    assert "stopped" in appliance.run_sh("stop").stdout
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert appliance.processes() == []
    log = (appliance.home / "logs" / "appliance.log").read_text()
    assert "anysync.server.app: stopped" in log
    assert s3_secret not in log
    assert appliance.run_sh("status", check=False).returncode == 3

    # Start again: every byte of both backups is still there.
    appliance.run_sh()
    device.run("restore", "latest", "--target", str(tmp_path / "restored-2"))
    assert snapshot_of(tmp_path / "restored-2" / source.name) == snapshot_of(source)
    appliance.run_sh("stop")
    assert appliance.processes() == []
