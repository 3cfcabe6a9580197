"""anysync drive: a sync folder as a drive, every file visible, content on demand.

drive mount NAME MOUNTPOINT [--cache-size 10G] [--min-free 5G] [--foreground]
drive umount MOUNTPOINT [--force]     commit pending changes, then unmount
drive list                            drives of this device
drive status [PATH...]                cache use, pending changes; or per-file state
drive flush [MOUNTPOINT]              commit every closed change now
pin PATH... / unpin PATH...           keep a sub-tree offline / let it be evicted again
evict PATH... [--unpin]               free the space of a sub-tree now

The daemon serves in the background; the other commands talk to it through its control
socket (drive/control.py), so they need no password.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anysync.cli import common
from anysync.client import mounts
from anysync.client.drive import control
from anysync.client.sync.state import SyncState
from anysync.errors import AnySyncError, LocalStateError, UsageError

DRIVE_JSON = "drive.json"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drive", help="a sync folder as a drive: every file visible, on demand")
    dsub = p.add_subparsers(dest="drive_cmd", required=True, metavar="SUBCOMMAND")
    m = dsub.add_parser("mount", help="mount a sync folder as a drive")
    m.add_argument("name", help="the sync folder's name (as in `anysync sync list`)")
    m.add_argument("mountpoint", type=Path, help="an empty directory to show the drive in")
    m.add_argument(
        "--cache-size", type=_size, help="cache limit (default: 10G or 10%% of the disk)"
    )
    m.add_argument("--min-free", type=_size, help="keep this much disk free (default: 5%%)")
    m.add_argument("--offline-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    m.add_argument("--foreground", action="store_true", help="stay attached (for systemd)")
    m.add_argument("--secret-stdin", action="store_true", help=argparse.SUPPRESS)
    common.add_password_option(m)
    u = dsub.add_parser("umount", help="commit pending changes and unmount")
    u.add_argument("mountpoint", type=Path, help="where the drive is mounted")
    u.add_argument("--force", action="store_true", help="unmount even with uncommitted changes")
    dsub.add_parser("list", help="this device's drives")
    st = dsub.add_parser("status", help="cache use and pending changes, or per-file state")
    st.add_argument(
        "paths", type=Path, nargs="*", help="files or directories in a drive (default: every drive)"
    )
    fl = dsub.add_parser("flush", help="commit every closed change now")
    fl.add_argument(
        "mountpoint", type=Path, nargs="?", help="the drive to flush (default: every drive)"
    )
    p.set_defaults(run=run_drive)
    pin = sub.add_parser("pin", help="keep files of a drive on this device (downloads them now)")
    pin.add_argument("paths", type=Path, nargs="+", help="files or directories in a drive")
    pin.set_defaults(run=lambda a: _set_pins(a.paths, True))
    unpin = sub.add_parser("unpin", help="let pinned files of a drive be evicted again")
    unpin.add_argument("paths", type=Path, nargs="+", help="files or directories in a drive")
    unpin.set_defaults(run=lambda a: _set_pins(a.paths, False))
    ev = sub.add_parser("evict", help="free the local space of files of a drive now")
    ev.add_argument("paths", type=Path, nargs="+", help="files or directories in a drive")
    ev.add_argument("--unpin", action="store_true", help="unpin pinned files first")
    ev.set_defaults(run=_evict)


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        return int(float(t[: len(t) - len(unit)]) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (like 500M or 20G)") from None


def run_drive(args: argparse.Namespace) -> int:
    cmd = args.drive_cmd
    if cmd == "mount":
        return _mount(args) if args.foreground else _mount_in_background(args)
    if cmd == "umount":
        return _umount(args.mountpoint, args.force)
    if cmd == "list":
        return _list()
    if cmd == "status":
        return _status(args.paths)
    return _flush(args.mountpoint)


# ---------------------------------------------------------------------- registry


@dataclass
class Registered:
    root: Path
    name: str
    mountpoint: Path
    pid: int


def drives_root() -> Path:
    return common.home().root / "drive"


def registered() -> list[Registered]:
    out = []
    for f in sorted(drives_root().glob(f"*/{DRIVE_JSON}")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads(f.read_text())
            out.append(Registered(f.parent, doc["name"], Path(doc["mountpoint"]), doc["pid"]))
    return out


def _registered_at(mountpoint: Path) -> Registered:
    where = Path(os.path.abspath(mountpoint))
    for d in registered():
        if d.mountpoint == where:
            return d
    raise UsageError(f"{mountpoint} is not a drive of this device (see `anysync drive list`)")


def mounted_drive(ref: str) -> Registered | None:
    """The drive of this ref, if it is mounted on this device."""
    root = drives_root() / ref[2:]
    return next((d for d in registered() if d.root == root and _live(d)), None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------- mount


def _check_mountpoint(mountpoint: Path) -> Path:
    where = Path(os.path.abspath(mountpoint))
    if mounts.is_anysync_mount(where):
        try:
            os.stat(where)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
            mounts.lazy_unmount(where)  # a killed daemon's mount: recover it
        else:
            raise UsageError(f"{where} is already mounted; `anysync drive umount {where}` first")
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the mount point {where}: {exc.strerror}") from None
    if not where.is_dir():
        raise UsageError(f"{where} is not a directory")
    if any(where.iterdir()):
        raise UsageError(f"{where} is not empty; a drive mounts on an empty directory")
    return where


def _mount_in_background(args: argparse.Namespace) -> int:
    """Start `drive mount --foreground` detached, hand it the device passphrase (if
    device.keys has one) through a pipe (never argv, its environment or a file), and
    return once it serves (or with its error)."""
    where = _check_mountpoint(args.mountpoint)
    secret = common.secret_for_child(args)
    log_dir = common.home().root / "drive"
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = log_dir / "daemon.log"
    argv = [sys.executable, "-m", "anysync.cli.main", "drive", "mount", args.name, str(where)]
    argv += ["--foreground", "--secret-stdin", "--offline-timeout", str(args.offline_timeout)]
    if args.cache_size is not None:
        argv += ["--cache-size", str(args.cache_size)]
    if args.min_free is not None:
        argv += ["--min-free", str(args.min_free)]
    with log_path.open("ab") as log_file:
        os.chmod(log_path, 0o600)
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
            # The daemon lives for days: no secret is left in its environment.
            env={k: v for k, v in os.environ.items() if k not in common.SECRET_ENV},
        )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(secret.encode() + b"\n")
    child.stdin.close()
    line = child.stdout.readline()
    if line.strip() == b"ready":
        print(f"mounted {args.name!r} at {where} (log: {log_path})")
        return 0
    child.wait()
    last = _last_line(log_path)
    print(last or f"anysync: error: the drive daemon exited ({child.returncode})", file=sys.stderr)
    return child.returncode or 1


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _mount(args: argparse.Namespace) -> int:
    from anysync.client.drive import daemon
    from anysync.client.repo.repository import Repository
    from anysync.client.sync import engine

    where = _check_mountpoint(args.mountpoint)
    passphrase = sys.stdin.readline().rstrip("\n") if args.secret_stdin else None
    if args.secret_stdin:
        logging.getLogger().setLevel(logging.INFO)
    with common.open_session(args, passphrase) as s:
        if any(f.name == args.name for f in SyncState(s.state).folders()):
            raise UsageError(
                f"{args.name!r} is a sync folder on this device; a folder is either synced "
                "or a drive here, not both"
            )
        ref = engine.folder_ref(s.repo, args.name)
        root = drives_root() / ref[2:]
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in registered():
            if d.root == root and d.mountpoint != where and _alive(d.pid):
                raise UsageError(f"{args.name!r} is already mounted at {d.mountpoint}")
        settings = daemon.Settings(
            name=args.name,
            ref=ref,
            mountpoint=where,
            cache_size=args.cache_size or _default_cache(root),
            min_free=args.min_free if args.min_free is not None else _default_min_free(root),
            offline_timeout=args.offline_timeout,
        )
        device = engine.Device(s.config.device_id, s.config.device_name, socket.gethostname())
        reader = Repository(s.remote, s.keys)
        try:
            drive = daemon.Drive(root, settings, reader, s.repo, s.refs, s.remote, device)
            doc = {"version": 1, "name": args.name, "mountpoint": str(where), "pid": os.getpid()}
            (root / DRIVE_JSON).write_text(json.dumps(doc))

            def ready() -> None:
                if args.secret_stdin:
                    sys.stdout.write("ready\n")
                    sys.stdout.flush()
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, 1)
                else:
                    print(f"serving {args.name!r} at {where}; Ctrl-C or `drive umount` to stop")

            daemon.serve(drive, ready)
        finally:
            reader.close()
    return 0


def _default_cache(root: Path) -> int:
    st = os.statvfs(root)
    return min(10 << 30, st.f_blocks * st.f_frsize // 10)


def _default_min_free(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_blocks * st.f_frsize // 20


# ---------------------------------------------------------------------- talking to it


def _umount(mountpoint: Path, force: bool) -> int:
    d = _registered_at(mountpoint)
    live = _alive(d.pid) and mounts.is_anysync_mount(d.mountpoint)
    if live and not force:
        try:
            _call(d, {"op": "flush"})
        except AnySyncError:
            pending = _call(d, {"op": "status"}).get("pending_changes", "some")
            raise AnySyncError(
                f"{pending} change(s) in {d.mountpoint} are not committed yet (is the server "
                "reachable?); they are kept for the next mount. Use --force to unmount anyway"
            ) from None
    if live:
        done = subprocess.run(["fusermount3", "-u", str(d.mountpoint)], capture_output=True)
        if done.returncode != 0:
            if not force:
                why = done.stderr.decode(errors="replace").strip().splitlines()
                raise AnySyncError(
                    f"cannot unmount {d.mountpoint}: {why[-1] if why else 'busy'}; close the "
                    "programs using it, or use --force"
                )
            mounts.lazy_unmount(d.mountpoint)
        deadline = time.monotonic() + 30
        while _alive(d.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        if mounts.is_anysync_mount(d.mountpoint):
            mounts.lazy_unmount(d.mountpoint)  # the daemon died: recover the mount point
        if _alive(d.pid):
            os.kill(d.pid, signal.SIGTERM)
    print(f"unmounted {d.mountpoint}")
    return 0


def _call(d: Registered, request: dict[str, Any]) -> dict[str, Any]:
    try:
        return control.call(d.root, request)
    except control.ControlError as exc:
        if exc.code == "unavailable":
            raise LocalStateError(f"the drive at {d.mountpoint}: {exc.message}") from None
        raise AnySyncError(exc.message) from None


def _in_drive(path: Path) -> tuple[Registered, str]:
    """The drive holding `path`, and the path inside it."""
    where = Path(os.path.abspath(path))
    for d in registered():
        if where == d.mountpoint or d.mountpoint in where.parents:
            if not _live(d):
                raise UsageError(f"the drive at {d.mountpoint} is not mounted")
            return d, str(where.relative_to(d.mountpoint)).removeprefix(".")
    raise UsageError(f"{path} is not in a drive (see `anysync drive list`)")


def _live(d: Registered) -> bool:
    return _alive(d.pid) and mounts.is_anysync_mount(d.mountpoint)


def _list() -> int:
    rows = []
    for d in registered():
        if _live(d):
            st = _call(d, {"op": "status"})
            state = "online" if st["online"] else "offline"
            used = f"{_mib(st['cache_used'])}/{_mib(st['cache_limit'])}"
            pending = str(st["pending_changes"])
        else:
            state, used, pending = "not mounted", "-", "-"
        rows.append([d.name, str(d.mountpoint), state, used, pending])
    if not rows:
        print("no drives; `anysync drive mount NAME MOUNTPOINT` makes one")
        return 0
    common.print_table(["NAME", "MOUNTPOINT", "STATE", "CACHE MiB", "PENDING"], rows)
    return 0


def _mib(n: object) -> str:
    return f"{int(n) // (1 << 20)}" if isinstance(n, int) else "?"


def _status(paths: list[Path]) -> int:
    if not paths:
        for d in registered():
            if _live(d):
                print(json.dumps(_call(d, {"op": "status"}), indent=2))
            else:
                print(f"{d.name}: not mounted ({d.mountpoint})")
        return 0
    for p in paths:
        d, rel = _in_drive(p)
        targets = sorted(p.iterdir()) if p.is_dir() and not p.is_symlink() else [p]
        rels = [rel] if targets == [p] else [f"{rel}/{t.name}".lstrip("/") for t in targets]
        states = _call(d, {"op": "state", "paths": rels})["states"]
        for t, state in zip(targets, states, strict=True):
            print(f"{state:8} {t}")
    return 0


def _flush(mountpoint: Path | None) -> int:
    targets = [_registered_at(mountpoint)] if mountpoint else [d for d in registered() if _live(d)]
    for d in targets:
        try:
            _call(d, {"op": "flush"})
        except AnySyncError:
            raise AnySyncError(
                f"changes in {d.mountpoint} could not be committed (is the server reachable?); "
                "they are kept and retried"
            ) from None
        print(f"{d.mountpoint}: every closed change is committed")
    return 0


def _set_pins(paths: list[Path], pinned: bool) -> int:
    for p in paths:
        d, rel = _in_drive(p)
        try:
            control.call(d.root, {"op": "pin", "path": rel, "on": pinned})
        except control.ControlError as exc:
            raise AnySyncError(_problem(p, exc)) from None
        print(f"{'pinned' if pinned else 'unpinned'} {p}")
    return 0


def _evict(args: argparse.Namespace) -> int:
    for p in args.paths:
        d, rel = _in_drive(p)
        try:
            control.call(d.root, {"op": "evict", "path": rel, "unpin": args.unpin})
        except control.ControlError as exc:
            if exc.code == "pinned":
                raise UsageError(f"{p} is pinned; `anysync evict --unpin {p}` evicts it") from None
            raise AnySyncError(_problem(p, exc)) from None
        print(f"evicted {p}")
    return 0


def _problem(p: Path, exc: control.ControlError) -> str:
    if exc.code == "not-found":
        return f"{p} does not exist in the drive"
    return f"{p}: {exc.message}"
