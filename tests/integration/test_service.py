"""`anysync service` (issue #16): systemd user units that systemd-analyze accepts and
whose command lines, run as systemd would run them, really back up; uninstall removes
only what install wrote. The real CLI and server; systemd's own verifier."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.integration.harness import Client, Server, base_env


def _systemd_words(value: str) -> list[str]:
    """A command line or assignment as systemd splits and unescapes it (the subset
    `anysync service` writes: double quotes, backslash escapes, $$ and %%)."""
    return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(value)]


def _unit(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_install_writes_units_systemd_accepts_and_that_back_up(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "service@example.org")
    docs = tmp_path / "My $Docs 100%"  # systemd expands $ and % unless doubled
    docs.mkdir()
    (docs / "a.txt").write_text("backed up by the timer")
    config = tmp_path / "xdg"
    env = {"XDG_CONFIG_HOME": str(config)}
    out = device_a.run(
        "service", "install", "--backup", str(docs), "--schedule", "*-*-* 02:30",
        "--no-enable", env=env,
    ).stdout  # fmt: skip
    units = config / "systemd" / "user"
    names = sorted(p.name for p in units.iterdir())
    assert names == ["anysync-backup.service", "anysync-backup.timer", "anysync-sync.service"]
    assert "systemctl --user enable --now" in out

    verify = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / n) for n in names)],
        capture_output=True, text=True, cwd=units,
    )  # fmt: skip
    # Not only no error: not a warning either (a bad value is "ignored" with rc 0).
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    assert _unit(units / "anysync-backup.timer")["OnCalendar"] == ["*-*-* 02:30"]

    # The backup unit's command, with its environment, as systemd runs it.
    backup = _unit(units / "anysync-backup.service")
    [environment] = backup["Environment"]
    key, home = _systemd_words(environment)[0].split("=", 1)
    assert (key, home) == ("ANYSYNC_HOME", str(device_a.home))
    argv = _systemd_words(backup["ExecStart"][0])
    assert Path(argv[0]).is_absolute() and argv[1:] == ["backup", str(docs)]
    ran = subprocess.run(
        argv, env=base_env() | {key: home}, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert [s["paths"] for s in device_a.snapshots()] == [[str(docs)]]
    sync = _unit(units / "anysync-sync.service")
    assert shlex.split(sync["ExecStart"][0])[1:] == ["sync", "run", "--watch"]

    # A unit of the same name that someone else wrote is not ours to remove.
    (units / "anysync-sync.service").write_text("[Service]\nExecStart=/bin/true\n")
    out = device_a.run("service", "uninstall", env=env).stdout
    assert sorted(p.name for p in units.iterdir()) == ["anysync-sync.service"]
    assert "removed" in out


def test_install_refuses_what_would_only_fail_in_the_background(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    not_logged_in = device_b.run("service", "install", "--no-enable", env=env, check=False)
    assert not_logged_in.returncode == 10
    device_a.signup(server, "service@example.org")
    bad = device_a.run(
        "service", "install", "--backup", str(tmp_path), "--schedule", "every tuesday-ish",
        "--no-enable", env=env, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "OnCalendar" not in bad.stderr and "systemd.time" in bad.stderr
    injected = device_a.run(
        "service", "install", "--backup", str(tmp_path) + "/a\nExecStart=/bin/touch /tmp/x",
        "--no-enable", env=env, check=False,
    )  # fmt: skip
    assert injected.returncode == 2 and "control character" in injected.stderr
    missing = device_a.run(
        "service", "install", "--backup", str(tmp_path / "nope"), "--no-enable", env=env,
        check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "xdg" / "systemd").exists()
