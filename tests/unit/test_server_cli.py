"""`anysync-server`: home creation and the admin commands in-process, `run` as a real
process (signals, printed port and fingerprint, health check)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from anysync import tls
from anysync.errors import UsageError
from anysync.server.cli import main
from anysync.server.home import Home, HomeInUse, fingerprint
from anysync.server.metadata import Metadata, NewAccount, NewDevice
from anysync.types import KdfParams


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Home:
    root = tmp_path / "home"
    assert _run(capsys, "--home", str(root), "init")[0] == 0
    return Home(root)


def test_init_creates_a_private_home(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    for secret in (home.tls_key, home.secret_file, home.metadata_db):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert len(home.secret()) == 32
    assert (home.root / "objects").is_dir()
    assert home.load_config().registration == "invite"

    code, out, err = _run(capsys, "--home", str(home.root), "init")
    assert code != 0
    assert out == ""
    assert err.startswith("anysync-server: error: ") and err.count("\n") == 1


def test_fingerprint(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYSYNC_SERVER_HOME", str(home.root))
    code, out, _ = _run(capsys, "fingerprint")
    assert (code, out) == (0, tls.fingerprint(home.cert_pem()) + "\n")


def test_the_fingerprint_is_the_first_certificate_s(home: Home) -> None:
    # What a chain file (or one with text around it) gives anysync.tls: its first.
    cert = home.cert_pem()
    chain = b"subject=CN = localhost\n" + cert + tls.generate_self_signed(["other"])[1]
    assert fingerprint(chain) == tls.fingerprint(chain) == tls.fingerprint(cert)
    with pytest.raises(UsageError):
        fingerprint(b"not a certificate")


def test_serving_does_not_load_x509() -> None:
    # cryptography.x509 is 2.3 MiB of the server's RSS (issue #15): `run` computes the
    # fingerprint from the PEM itself (test_fingerprint checks it against anysync.tls).
    code = (
        "import sys, anysync.server.cli, anysync.server.app\n"
        "print([m for m in sys.modules if m.startswith(('cryptography.x509', 'anysync.tls'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_invites(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "invite", "create", "--home", str(home.root))
    assert code == 0
    assert re.fullmatch(r"[A-Z2-7]{20}\n", out)
    code, out, _ = _run(capsys, "invite", "list", "--home", str(home.root))
    assert code == 0
    assert "unused" in out
    assert out.count("\n") == 2  # a header and one invite; the code itself is not shown


def test_user_admin(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    db = Metadata.open(home.metadata_db)
    db.create_account(
        NewAccount(
            "ab" * 16, "a@example.org", KdfParams(b"s" * 16, 17, 8, 1), b"h", b"s", "p", b"k"
        ),
        NewDevice("laptop", b"p" * 32, b"t" * 32),
        None,
        0,
    )
    db.close()
    h = ("--home", str(home.root))

    assert _run(capsys, *h, "user", "quota", "A@example.org", "10G")[0] == 0
    assert _run(capsys, *h, "user", "disable", "a@example.org")[0] == 0
    code, out, _ = _run(capsys, *h, "user", "list", "--json")
    assert json.loads(out) == [
        {
            "email": "a@example.org",
            "user_id": "ab" * 16,
            "devices": 1,
            "used_bytes": 0,
            "quota_bytes": 10 << 30,
            "effective_quota_bytes": 10 << 30,
            "disabled": True,
        }
    ]
    assert _run(capsys, *h, "user", "enable", "a@example.org")[0] == 0
    assert _run(capsys, *h, "user", "quota", "a@example.org", "none")[0] == 0
    code, out, _ = _run(capsys, *h, "user", "list")
    assert "a@example.org" in out and "unlimited" in out

    code, _, err = _run(capsys, *h, "user", "quota", "nobody@example.org", "1G")
    assert code != 0 and err == "anysync-server: error: no account with e-mail nobody@example.org\n"
    code, _, err = _run(capsys, *h, "user", "quota", "a@example.org", "lots")
    assert code != 0 and "not a size" in err


def test_run_serves_until_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "fresh-home"
    env = {**os.environ, "ANYSYNC_SERVER_HOME": str(root)}
    cli = [sys.executable, "-m", "anysync.server.cli"]
    proc = subprocess.Popen(
        [*cli, "run", "--listen", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0] == f"initialised new server home at {root}\n"
        m = re.fullmatch(r"AnySync server listening on 127\.0\.0\.1:(\d+)\n", lines[1])
        assert m and int(m.group(1)) > 0
        fingerprint = tls.fingerprint(Home(root).cert_pem())
        assert lines[2] == f"TLS certificate fingerprint (SHA-256): {fingerprint}\n"

        address = f"127.0.0.1:{m.group(1)}"
        health = subprocess.run([*cli, "health", "--address", address], env=env, check=False)
        assert health.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in out  # logs go to standard output (appliance model)

    stopped = subprocess.run(
        [*cli, "health", "--address", address, "--timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stopped.returncode == 1
    assert stopped.stderr.startswith("anysync-server: error: 127.0.0.1:")


# ---------------------------------------------------------------- one server per home


def test_the_home_lock_is_exclusive_until_released(home: Home) -> None:
    with home.lock():
        with pytest.raises(HomeInUse) as caught:
            home.lock()
        assert str(caught.value) == (
            f"another anysync-server (pid {os.getpid()}) is running on {home.root}; stop it first"
        )
    home.lock().release()  # free again
    assert stat.S_IMODE(home.lock_file.stat().st_mode) == 0o600


def test_a_second_server_on_the_same_home_exits(home: Home) -> None:
    env = {**os.environ, "ANYSYNC_SERVER_HOME": str(home.root)}
    run = [sys.executable, "-m", "anysync.server.cli", "run", "--listen", "127.0.0.1:0"]
    first = subprocess.Popen(
        run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith("AnySync server listening on 127.0.0.1:")
        second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr == (
            f"anysync-server: error: another anysync-server (pid {first.pid}) is running on "
            f"{home.root}; stop it first\n"
        )
        assert "listening" not in second.stdout
        assert first.poll() is None  # the first one serves on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert first.returncode == 0
    # Stopped, it let go of the home: the next server starts.
    again = subprocess.Popen(
        run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert again.stdout is not None
        assert again.stdout.readline().startswith("AnySync server listening on 127.0.0.1:")
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=20)


def test_run_refuses_a_bad_gc_duration(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--home", str(home.root), "run", "--gc-grace", "soon")
    assert code == 2
    assert "--gc-grace: not a duration: 'soon'" in err


def test_run_on_the_appliances_home_says_to_use_run_sh(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` on the home run.sh set up: its packs live in the appliance's object
    store, which only supervisord starts. Under supervisord the same command serves."""
    monkeypatch.delenv("SUPERVISOR_ENABLED", raising=False)
    (home.root / "supervisor").mkdir()
    (home.root / "supervisor" / "supervisord.conf").write_text("[supervisord]\n")
    code, _, err = _run(capsys, "--home", str(home.root), "run")
    assert code == 2
    assert "appliance's home" in err and "./run.sh" in err and "ANYSYNC_SERVER_HOME" in err
