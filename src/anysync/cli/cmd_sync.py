"""anysync sync: two-way sync of folders between devices.

sync add PATH [--name NAME]   new sync folder, or join an existing one by name
sync remove NAME|PATH         stop syncing a folder here (its files stay)
sync list                     folders, state, last sync, pending changes
sync run [--watch]            one pass over every folder, or keep reacting to changes
sync status [PATH]            per-file state: synced, pending, excluded, conflict
sync exclude PATH / include PATH   selective sync
sync retention NAME [--keep-...]   show or set how long a folder keeps old versions
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from anysync.cli import cmd_drive, common
from anysync.cli.cmd_forget import add_policy_options, policy_from
from anysync.client import forget
from anysync.client.repo import history
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, selective
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.lock import pass_lock
from anysync.client.sync.merge import is_conflict_name
from anysync.client.sync.scan import pending
from anysync.client.sync.state import Folder, SyncState, under
from anysync.client.sync.watch import Watcher
from anysync.errors import AnySyncError, NotFound, UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sync", help="two-way sync of folders between devices")
    ssub = p.add_subparsers(dest="sync_cmd", required=True, metavar="SUBCOMMAND")
    add = ssub.add_parser("add", help="sync a folder (new, or join one by name)")
    add.add_argument("path", type=Path, help="the folder (made if missing)")
    add.add_argument("--name", help="the folder's name on every device (default: directory name)")
    rm = ssub.add_parser(
        "remove", help="stop syncing a folder on this device (its files and its copy on "
        "the server stay)",
    )  # fmt: skip
    rm.add_argument("folder", metavar="NAME|PATH", help="the folder's name or its path")
    ls = ssub.add_parser("list", help="list sync folders")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    run = ssub.add_parser("run", help="sync now; --watch keeps syncing as things change")
    run.add_argument("--watch", action="store_true", help="keep running, syncing as files change")
    run.add_argument("--folder", action="append", help="only this folder (by name); repeatable")
    run.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per folder and pass, a line each (JSON Lines)",
    )
    st = ssub.add_parser("status", help="per-file sync state")
    st.add_argument(
        "path", type=Path, nargs="?", help="a file or directory (default: every folder)"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ex = ssub.add_parser("exclude", help="keep a sub-tree off this device")
    ex.add_argument("path", type=Path, help="a sub-tree of a sync folder")
    inc = ssub.add_parser("include", help="bring an excluded sub-tree back")
    inc.add_argument("path", type=Path, help="an excluded sub-tree")
    ret = ssub.add_parser(
        "retention",
        help="show or set how long a folder keeps old versions (applied by `anysync forget`)",
    )
    ret.add_argument("name", help="the folder's name")
    add_policy_options(ret)
    ret.add_argument("--json", action="store_true", help="machine-readable output")
    for q in (add, rm, run, st, ex, inc, ret, ls):
        common.add_password_option(q)
    p.set_defaults(run=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    if args.sync_cmd in ("list", "status", "remove"):
        return _offline(args)  # local state only: no password, no server
    if args.sync_cmd == "retention":
        return _retention(args)
    if args.sync_cmd == "add" and os.path.lexists(args.path) and not os.path.isdir(args.path):
        raise UsageError(f"{args.path} is not a directory; `sync add` takes a folder")
    with common.open_session(args) as s:
        state = SyncState(s.state)
        device = engine.Device(s.config.device_id, s.config.device_name, socket.gethostname())

        said: dict[str, str] = {}  # folder → the error last printed (watch mode)
        as_json = bool(getattr(args, "json", False))

        def one_pass(folders: list[Folder], watcher: Watcher | None = None) -> int:
            failures = 0
            with pass_lock(s.home.root):
                for f in folders:
                    now = state.find_folder(f.name)
                    if now is None or (now.path, now.ref) != (f.path, f.ref):
                        continue  # removed meanwhile (or removed and added anew elsewhere)
                    changed = watcher.take_changes(f.path) if watcher else None
                    try:
                        r = engine.run_pass(s.repo, s.remote, s.state, f, device, changed)
                    except AnySyncError as exc:
                        state.finished(f.name, time.time_ns(), exc.message)
                        if as_json:
                            _print_json_line({"folder": f.name, "error": exc.message})
                            failures += 1
                            continue
                        # Watching through an outage: the same error once, not per pass.
                        if said.get(f.name) != exc.message:
                            print(f"{f.name}: error: {exc.message}", file=sys.stderr)
                            said[f.name] = exc.message
                        failures += 1
                        continue
                    said.pop(f.name, None)
                    state.finished(f.name, time.time_ns(), None)
                    if as_json:
                        _print_json_line(_as_doc(f, r))
                    else:
                        _report(f, r)
            return failures

        cmd = args.sync_cmd
        if cmd == "add":
            path = Path(os.path.abspath(args.path))
            name = args.name or path.name
            ref = engine.folder_ref(s.repo, name)
            if cmd_drive.mounted_drive(ref) is not None:
                raise UsageError(
                    f"{name!r} is a drive on this device; a folder is either a drive or "
                    "synced here, not both (`anysync drive umount` it first)"
                )
            joining = s.refs.head(ref)[1] is not None
            with _made_unless_refused(path):
                state.add_folder(name, path, ref)
            how = "joined existing folder" if joining else "added new folder"
            print(f"{how} {name!r} at {path}; run `anysync sync run` to sync it")
            return 0
        if cmd in ("exclude", "include"):
            folder, rel = state.folder_for(args.path)
            if not rel:
                raise UsageError("give a path inside the folder, not the folder itself")
            if cmd == "exclude":
                with pass_lock(s.home.root):
                    # Push local changes before they leave this device; a failed pass
                    # stops here with its error, and nothing is excluded or removed.
                    r = engine.run_pass(s.repo, s.remote, s.state, folder, device)
                    state.finished(folder.name, time.time_ns(), None)
                    _report(folder, r)
                    kept = selective.exclude(state, folder, rel)
                print(
                    f"excluded {os.fsdecode(rel)} from this device"
                    + (f"; kept {kept} unsynced files" if kept else "")
                )
                return 0
            state.set_excluded(folder.name, rel, False)
            print(f"included {os.fsdecode(rel)} again")
            return one_pass([folder])
        folders = [f for f in state.folders() if not args.folder or f.name in args.folder]
        if not folders:
            raise NotFound("no sync folders; add one with `anysync sync add PATH`")
        if not args.watch:
            return 1 if one_pass(folders) else 0
        print(
            f"watching {len(folders)} folder(s); Ctrl-C stops",
            file=sys.stderr if as_json else sys.stdout,  # stdout: JSON lines only
            flush=True,
        )
        watcher = Watcher([f.path for f in folders], s.remote, [f.ref for f in folders])
        _stop_on_signals(watcher)
        with contextlib.suppress(KeyboardInterrupt):
            watcher.run(lambda: _ignore(one_pass(folders, watcher)))
        return 0


@contextlib.contextmanager
def _made_unless_refused(path: Path) -> Iterator[None]:
    """Make the directory `path` (and missing parents) for the block; if the block
    refuses, remove what was made: a refused `sync add` leaves nothing behind."""
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the folder {path}: {exc.strerror}") from None
    try:
        yield
    except BaseException:
        for p in made:  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _remove(state: SyncState, which: str, home_root: Path) -> int:
    folder = state.find_folder(which)
    if folder is None:
        try:
            folder, rel = state.folder_for(Path(which))
        except NotFound:
            raise NotFound(
                f"{which} is neither the name nor the path of a sync folder; see "
                "`anysync sync list`"
            ) from None
        if rel:
            raise UsageError(
                f"{which} is inside the sync folder {folder.name!r}; give the folder itself "
                "(or `anysync sync exclude` a sub-tree)"
            )
    with pass_lock(home_root):  # not in the middle of a pass over it
        state.remove_folder(folder.name)
    print(
        f"stopped syncing {folder.name!r} on this device; the files in {folder.path} "
        "stay, and so does the folder on the server for other devices"
    )
    return 0


def _retention(args: argparse.Namespace) -> int:
    """Without rules, show the folder's retention; with rules, record them in an edit
    commit (needs the manage right: an edit by another device does not count)."""
    policy = policy_from(args)
    with common.open_session(args) as s:
        ref = engine.folder_ref(s.repo, args.name)
        _, head = s.refs.head(ref)
        if head is None:
            raise NotFound(f"there is no sync folder {args.name!r} on the server")
        if policy.is_empty():
            counting = forget.CountingEdits(s.remote, ref)
            view = history.view_of(s.repo, head, counting, common.print_warning)
            shown, default = forget.sync_policy(view), not view.retention
            if args.json:
                common.print_json({"folder": args.name, "policy": str(shown), "default": default})
            else:
                print(f"{args.name}: {shown}{' (the default)' if default else ''}")
            return 0
        common.ensure_manage(s, "changing retention")
        s.repo.maintenance = True
        writer = forget.Writer(s.config.device_id, s.config.device_name, socket.gethostname())
        made = forget.set_sync_retention(s.repo, s.refs, ref, policy, writer)
    if args.json:
        common.print_json(
            {"folder": args.name, "policy": str(policy), "default": False, "edit": made.id.hex()}
        )
    else:
        print(f"{args.name}: {policy} (edit commit {made.id.short()}); `anysync forget` applies it")
    return 0


def _stop_on_signals(watcher: Watcher) -> None:
    """Ctrl-C or SIGTERM (a service manager) lets the pass in progress finish, then stops;
    a second one stops at once. Interrupting a pass loses nothing (the commit comes
    first), but a pass that ends cleanly leaves nothing to redo and shuts down quickly."""

    def stop(signum: int, _frame: object) -> None:
        signal.signal(
            signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        )
        # os.write: print() could re-enter a write the signal interrupted.
        os.write(2, b"stopping after the pass in progress (again to stop at once)\n")
        # Not in the handler: it may have interrupted the watcher holding its own lock.
        threading.Thread(target=watcher.stop, name="stop", daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def _ignore(_: object) -> None:
    """Watch mode keeps going after a failed pass; the failure was printed."""


def _as_doc(f: Folder, r: engine.PassResult) -> dict[str, object]:
    return {
        "folder": f.name,
        "commit": r.committed.hex() if r.committed else None,
        "files_read": r.uploaded_files,
        "deletes_sent": r.deletes_sent,
        "downloaded": r.downloaded,
        "moved": r.moved,
        "deleted": r.deleted,
        "conflicts": r.conflicts,
        "skipped": r.skipped,
        "stuck": r.stuck,
        "warnings": r.warnings,
    }


def _print_json_line(doc: dict[str, object]) -> None:
    # As common.print_json: a name that is not UTF-8 as its surrogate's JSON escape.
    line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
    sys.stdout.flush()
    sys.stdout.buffer.write(line.encode("utf-8", "backslashreplace"))
    sys.stdout.buffer.flush()


def _report(f: Folder, r: engine.PassResult) -> None:
    parts = []
    if r.uploaded_files:
        parts.append(f"{r.uploaded_files} read")
    if r.downloaded:
        parts.append(f"{r.downloaded} downloaded")
    if r.moved:
        parts.append(f"{r.moved} moved")
    if r.deleted:
        parts.append(f"{r.deleted} deleted")
    if r.stuck:
        parts.append(f"{len(r.stuck)} stuck")
    if r.deletes_sent:
        parts.append(f"{r.deletes_sent} deletion(s) sent")
    head = f" → {r.committed.short()}" if r.committed else ""
    print(f"{f.name}: {', '.join(parts) or 'up to date'}{head}", flush=True)
    for c in r.conflicts:
        print(f"{f.name}: conflict: the other version is kept as {c}", flush=True)
    for p in r.skipped:
        print(f"{f.name}: {p} changed while syncing; it syncs on the next pass", file=sys.stderr)
    for p, why in r.stuck.items():
        print(f"{f.name}: {p} is stuck: {why}", file=sys.stderr)
    for w in r.warnings:
        print(f"{f.name}: warning: {w}", file=sys.stderr)


def _offline(args: argparse.Namespace) -> int:
    h = common.home()
    if not h.state_path.exists():
        raise NotFound("no sync folders; add one with `anysync sync add PATH`")
    db = StateDB(h.state_path)
    try:
        state = SyncState(db)
        if args.sync_cmd == "remove":
            return _remove(state, args.folder, h.root)
        if args.sync_cmd == "list":
            return _list(state, args.json)
        return _status(state, args.path, args.json)
    finally:
        db.close()


def _list(state: SyncState, as_json: bool) -> int:
    rows = []
    docs: list[dict[str, object]] = []
    for f in state.folders():
        changes = (
            pending(f.path, IgnoreRules.load(f.path), state.excludes(f.name), state.records(f.name))
            if f.path.is_dir()
            else {}
        )
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.last_sync_ns / 1e9))
            if f.last_sync_ns
            else "never"
        )
        status = (
            "error: " + f.last_error
            if f.last_error
            else ("missing" if not f.path.is_dir() else "ok")
        )
        stuck = state.stuck(f.name)
        if stuck and not f.last_error:
            status = f"{len(stuck)} stuck"
        rows.append([f.name, str(f.path), status, when, str(len(changes))])
        docs.append(
            {
                "name": f.name,
                "path": str(f.path),
                "state": status,
                "last_sync": f.last_sync_ns / 1e9 if f.last_sync_ns else None,
                "pending": len(changes),
            }
        )
    if as_json:
        common.print_json(docs)
    else:
        common.print_table(["NAME", "PATH", "STATE", "LAST SYNC", "PENDING"], rows)
    return 0


def _status(state: SyncState, path: Path | None, as_json: bool) -> int:
    found = _states(state, path)
    if as_json:
        common.print_json([{"path": p, "state": st, "detail": why} for st, why, p in found])
        return 0
    for st, why, p in found:
        label = f"{st} ({why})" if why else st
        print(f"{label:20} {common.shown(p)}")
    return 0


def _states(state: SyncState, path: Path | None) -> list[tuple[str, str, str]]:
    """(state, detail, FOLDER/path) of every path `sync status` reports."""
    out: list[tuple[str, str, str]] = []
    targets = [(f, b"") for f in state.folders()] if path is None else [state.folder_for(path)]
    for folder, rel in targets:
        before = len(out)
        excluded = state.excludes(folder.name)
        records = state.records(folder.name)
        stuck = state.stuck(folder.name)
        changes = pending(folder.path, IgnoreRules.load(folder.path), excluded, records)
        for p in sorted(records.keys() | changes.keys() | stuck.keys()):
            if rel and not under(p, {rel}):
                continue
            if p in stuck:
                st, why = "stuck", stuck[p]
            elif p in changes:
                st, why = "pending", str(changes[p])
            elif is_conflict_name(p.rpartition(b"/")[2]):
                st, why = "conflict", ""
            else:
                st, why = "synced", ""
            out.append((st, why, f"{folder.name}/{os.fsdecode(p)}"))
        for p in sorted(excluded):
            if not rel or under(p, {rel}) or under(rel, {p}):
                out.append(("excluded", "", f"{folder.name}/{os.fsdecode(p)}"))
        if rel and len(out) == before:
            out.append(_status_of_unknown(folder, rel))
    return out


def _status_of_unknown(folder: Folder, rel: bytes) -> tuple[str, str, str]:
    """A path the sync state knows nothing about: ignored, or not there at all."""
    on_disk = folder.path / os.fsdecode(rel)
    if not os.path.lexists(on_disk):
        raise NotFound(f"{on_disk} is neither on disk nor in the sync folder {folder.name!r}")
    rules = IgnoreRules.load(folder.path)
    parts = rel.split(b"/")
    is_dir = on_disk.is_dir() and not on_disk.is_symlink()
    shown = f"{folder.name}/{os.fsdecode(rel)}"
    for i in range(1, len(parts) + 1):  # an ignored parent directory ignores the path
        if rules.ignored(b"/".join(parts[:i]), i < len(parts) or is_dir):
            return ("ignored", "", shown)
    return ("pending", "new", shown)
