"""anysync service: run AnySync in the background as systemd user units.

  service install [--backup PATH... [--schedule daily]] [--no-sync] [--no-enable]
  service status
  service uninstall

Units, in ~/.config/systemd/user (or $XDG_CONFIG_HOME/systemd/user):
  anysync-sync.service     `anysync sync run --watch`, restarted if it fails
  anysync-backup.service   `anysync backup PATH...`, one shot
  anysync-backup.timer     starts it on the schedule (systemd OnCalendar syntax;
                           Persistent: a run missed while off happens at the next boot)
Every unit names this device's ANYSYNC_HOME and the absolute path of this `anysync`,
so it runs what was installed, whatever PATH the service manager has. The commands
unlock with the device key file: no password is stored anywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from anysync.cli import common
from anysync.errors import UsageError

SYNC, BACKUP, TIMER = "anysync-sync.service", "anysync-backup.service", "anysync-backup.timer"
UNITS = (SYNC, BACKUP, TIMER)
MARK = "# Written by `anysync service install`; `anysync service uninstall` removes it."


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("service", help="run sync and scheduled backups as systemd user units")
    ssub = p.add_subparsers(dest="service_cmd", required=True, metavar="SUBCOMMAND")
    i = ssub.add_parser("install", help="write the units and enable them")
    i.add_argument(
        "--backup", nargs="+", type=Path, default=[], metavar="PATH",
        help="back these paths up on the schedule",
    )  # fmt: skip
    i.add_argument(
        "--schedule", default="daily",
        help="when to back up, in systemd's OnCalendar syntax (daily, hourly, "
        "'*-*-* 02:30'); default daily",
    )  # fmt: skip
    i.add_argument("--no-sync", action="store_true", help="no sync service, only backups")
    i.add_argument(
        "--no-enable", action="store_true", help="write the units only (systemctl not run)"
    )
    ssub.add_parser("status", help="which units are installed, and what systemd says")
    ssub.add_parser("uninstall", help="stop, disable and remove the units")
    p.set_defaults(run=run)


def unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def quote(arg: str, command_line: bool = True) -> str:
    """One argument of an ExecStart= command line (`command_line`) or the value of an
    Environment= assignment: `%` is a specifier everywhere, doubled; `$` is expanded on
    command lines only, doubled there; spaces, quotes and backslashes get double quotes.
    (Control characters are refused before: see `unit_text`.)"""
    arg = arg.replace("%", "%%")
    if command_line:
        arg = arg.replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(what: str, value: str) -> str:
    """`value`, if a unit file can hold it: a line break would start a new key (an
    injected ExecStart=), and the file is UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} {value!r} is not UTF-8; systemd units cannot name it") from None
    if not value.isprintable():
        raise UsageError(f"{what} {value!r} holds a control character; rename it first")
    return value


def units(exe: str, home: str, backup: list[str], schedule: str, sync: bool) -> dict[str, str]:
    """The unit files (name → text) for these choices. Pure: tested as text and with
    systemd-analyze verify."""
    env = f"Environment={quote('ANYSYNC_HOME=' + home, command_line=False)}"
    out: dict[str, str] = {}
    if sync:
        out[SYNC] = "\n".join([
            MARK, "[Unit]", "Description=AnySync: keep sync folders in sync",
            "After=network-online.target", "", "[Service]", "Type=simple", env,
            f"ExecStart={quote(exe)} sync run --watch",
            "Restart=on-failure", "RestartSec=30", "", "[Install]", "WantedBy=default.target", "",
        ])  # fmt: skip
    if backup:
        paths = " ".join(quote(p) for p in backup)
        out[BACKUP] = "\n".join([
            MARK, "[Unit]", "Description=AnySync: back up " + ", ".join(backup).replace("%", "%%"),
            "After=network-online.target", "", "[Service]", "Type=oneshot", env,
            f"ExecStart={quote(exe)} backup {paths}", "Nice=10", "IOSchedulingClass=idle", "",
        ])  # fmt: skip
        out[TIMER] = "\n".join([
            MARK, "[Unit]", "Description=AnySync: scheduled backup", "", "[Timer]",
            f"OnCalendar={schedule}", "Persistent=true", "RandomizedDelaySec=10min", "",
            "[Install]", "WantedBy=timers.target", "",
        ])  # fmt: skip
    return out


def this_program() -> str:
    """The `anysync` running now (its entry-point script), not another one on PATH."""
    me = os.path.abspath(sys.argv[0])
    if os.path.basename(me) == "anysync" and os.access(me, os.X_OK):
        return me
    found = shutil.which("anysync")
    if found is None:
        raise UsageError("cannot tell where the anysync program is; run it by its path")
    return os.path.abspath(found)


def run(args: argparse.Namespace) -> int:
    where = unit_dir()
    if args.service_cmd == "install":
        return _install(args, where)
    if args.service_cmd == "status":
        return _status(where)
    return _uninstall(where)


def _install(args: argparse.Namespace, where: Path) -> int:
    if args.no_sync and not args.backup:
        raise UsageError("nothing to install: give --backup PATH..., or leave out --no-sync")
    _check_schedule(args.schedule)
    h = common.home()
    h.config()  # logged in here: else the units would only fail in the background
    backup = [unit_text("the path", os.path.abspath(p)) for p in args.backup]
    for p in backup:
        if not os.path.lexists(p):
            raise UsageError(f"{p} does not exist; give the paths to back up")
    exe = unit_text("the program", this_program())
    home = unit_text("ANYSYNC_HOME", str(h.root))
    made = units(exe, home, backup, unit_text("--schedule", args.schedule), not args.no_sync)
    where.mkdir(parents=True, exist_ok=True)
    for name in UNITS:  # a unit of an earlier install that this one leaves out goes
        if name not in made and _ours(where / name):
            (where / name).unlink()
    for name, text in made.items():
        tmp = where / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, where / name)
        print(f"wrote {where / name}")
    started = [n for n in made if n != BACKUP]  # the timer starts the backup
    if args.no_enable:
        print(f"not enabled (--no-enable): systemctl --user enable --now {' '.join(started)}")
        return 0
    _systemctl("daemon-reload")
    _systemctl("enable", "--now", *started)
    print("enabled; `anysync service status` shows them, `journalctl --user -u anysync-*` logs")
    return 0


def _status(where: Path) -> int:
    present = [n for n in UNITS if (where / n).exists()]
    if not present:
        print(f"no AnySync units in {where}; `anysync service install` writes them")
        return 0
    for n in present:
        state = _systemctl_out("is-active", n) if shutil.which("systemctl") else "unknown"
        print(f"{n:24} {state}")
    return 0


def _uninstall(where: Path) -> int:
    present = [n for n in UNITS if _ours(where / n)]
    if not present:
        print(f"no AnySync units in {where}")
        return 0
    if shutil.which("systemctl"):
        subprocess.run(
            ["systemctl", "--user", "disable", "--now", *present],
            capture_output=True, check=False,
        )  # fmt: skip
    for n in present:
        (where / n).unlink()
        print(f"removed {where / n}")
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "--user", "daemon-reload"], capture_output=True, check=False)
    return 0


def _ours(path: Path) -> bool:
    """A unit file this command wrote (another one of the same name is left alone)."""
    try:
        return path.read_text().startswith(MARK)
    except OSError:
        return False


def _check_schedule(schedule: str) -> None:
    if not shutil.which("systemd-analyze"):
        return  # systemd checks it when the timer is loaded
    proc = subprocess.run(
        ["systemd-analyze", "calendar", schedule], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise UsageError(
            f"--schedule {schedule!r} is not a systemd calendar expression; e.g. daily, "
            "hourly, Mon..Fri 18:00, '*-*-* 02:30' (see man systemd.time)"
        )


def _systemctl(*args: str) -> None:
    if not shutil.which("systemctl"):
        raise UsageError("systemctl not found: this needs systemd (or use --no-enable)")
    proc = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise UsageError(
            f"systemctl --user {' '.join(args)}: {why} (the units are written; enable "
            "them in a session with a user manager)"
        )


def _systemctl_out(*args: str) -> str:
    proc = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"
