"""anysync backup: snapshot one or more paths. Prints the snapshot ID and statistics.

Paths that could not be read are listed and the exit code is 13 (PartialSnapshot): the
snapshot was saved without them. Skipped special files are listed but exit 0."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import threading
from pathlib import Path

from anysync.cli import common
from anysync.cli.progress import Progress
from anysync.client.backup import Labels, Origin, mounts_to_skip, run_backup
from anysync.client.backup_dry import TreeWalk, dry_run
from anysync.client.exclude import Exclusions, devices_of, read_exclude_file
from anysync.client.mounts import anysync_mounts
from anysync.client.progress import human_bytes
from anysync.client.statedb import local_state_key
from anysync.errors import PartialSnapshot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help="back up files and directories as a new snapshot")
    p.add_argument("paths", nargs="+", type=Path, help="files and directories to back up")
    p.add_argument(
        "--message", "-m", default="", help="a note stored (encrypted) with the snapshot"
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        type=common.tags,
        metavar="TAG[,TAG]",
        help="tag the snapshot (shown in `snapshots`, selected with --tag); repeatable",
    )
    p.add_argument(
        "--exclude",
        "-e",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out paths matching PATTERN (gitignore syntax, against the absolute "
        "path: '*.iso', 'node_modules/', '/home/me/Downloads'); repeatable",
    )
    p.add_argument(
        "--exclude-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="read --exclude patterns from FILE, one per line ('#' comments); repeatable",
    )
    p.add_argument(
        "--exclude-caches",
        action="store_true",
        help="leave out directories holding a CACHEDIR.TAG (browser and build caches)",
    )
    p.add_argument(
        "--one-file-system",
        "-x",
        action="store_true",
        help="do not cross into other file systems (mount points) below the paths",
    )
    p.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help="say what the backup would hold and read; read, upload and commit nothing",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_password_option(p)
    p.set_defaults(run=run)


def exclusions(args: argparse.Namespace) -> Exclusions:
    patterns = list(args.exclude)
    for f in args.exclude_file:
        patterns += read_exclude_file(f)
    devices = devices_of(args.paths) if args.one_file_system else None
    return Exclusions(patterns, caches=args.exclude_caches, devices=devices)


def scan_ahead(
    paths: list[Path], exclude: Exclusions, progress: Progress, skip: frozenset[bytes]
) -> None:
    """Count the files and bytes the backup will go through, on a thread beside it,
    for the progress line's share and time left (stat only, as restic does)."""

    def count() -> None:
        files = nbytes = 0
        for _, _, st in TreeWalk(paths, exclude, skip).files():
            files, nbytes = files + 1, nbytes + st.st_size
        progress.total(files, nbytes)

    if progress.enabled:
        threading.Thread(target=count, name="scan-ahead", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    exclude = exclusions(args)  # a bad exclude file is refused before anything else
    if args.dry_run:
        return _dry_run(args, exclude)
    with common.open_session(args) as s:
        origin = Origin(s.config.device_id, s.config.device_name, socket.gethostname())
        progress = common.progress("backup")
        sources = [Path(os.path.abspath(p)) for p in args.paths]
        scan_ahead(args.paths, exclude, progress, mounts_to_skip(sources, anysync_mounts()))
        result = run_backup(
            s.repo,
            s.remote,
            s.state,
            args.paths,
            origin,
            progress,
            Labels(args.message, tuple(sorted({t for group in args.tag for t in group}))),
            exclude,
        )
        st, ws = result.stats, s.repo.stats
    for w in st.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        common.print_json(
            {
                "snapshot": result.snapshot.id.hex(),
                "files": st.files,
                "dirs": st.dirs,
                "bytes": st.bytes,
                "files_read": st.files_read,
                "bytes_read": st.bytes_read,
                "blobs_new": ws.blobs_new,
                "bytes_added": ws.bytes_stored,
                "warnings": st.warnings,
                "skipped": [{"path": _shown(k.path), "reason": k.reason} for k in st.skipped],
                "excluded": st.excluded,
                "partial": st.partial,
            }
        )
    else:
        partial = "; some paths could not be read" if st.partial else ""
        print(f"snapshot {result.snapshot.id.short()} saved{partial}")
        print(
            f"  {st.files} files, {st.dirs} directories, {human_bytes(st.bytes)}; "
            f"read {st.files_read} files ({human_bytes(st.bytes_read)})"
            + (f"; {st.excluded} path{'s' * (st.excluded != 1)} excluded" if st.excluded else "")
        )
        print(
            f"  added {human_bytes(ws.bytes_stored)} in {ws.blobs_new} new blobs, {ws.packs} packs"
        )
        if st.skipped:
            print(f"  skipped {len(st.skipped)} paths, which are not in the snapshot:")
            for k in st.skipped:
                print(f"    {_shown(k.path)} ({k.reason})")
    return PartialSnapshot.exit_code if st.partial else 0


def _dry_run(args: argparse.Namespace, exclude: Exclusions) -> int:
    with common.open_session(args) as s:
        sources = [Path(os.path.abspath(p)) for p in args.paths]
        skip = mounts_to_skip(sources, anysync_mounts())
        plan = dry_run(s.state, local_state_key(s.repo.keys.id_key), sources, exclude, skip)
    if args.json:
        common.print_json({"dry_run": True, **dataclasses.asdict(plan)})
        return 0
    print(
        f"dry run: the snapshot would hold {plan.files} files ({human_bytes(plan.bytes)}); "
        f"{plan.to_read} new or changed ({human_bytes(plan.to_read_bytes)}) would be read"
        + (f"; {plan.excluded} paths excluded" if plan.excluded else "")
    )
    for u in plan.unreadable:
        print(f"  could not read {_shown(u)}", file=sys.stderr)
    print("nothing was read, uploaded or committed")
    return 0


def _shown(path: str) -> str:
    """A file name that is not UTF-8 (kept by os.fsdecode as surrogates) printed with
    U+FFFD in place of the undecodable bytes, instead of failing to print at all."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
