"""anysync restore: write a snapshot, or part of it, into a directory. Verifies every blob."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anysync.cli import common
from anysync.client.progress import human_bytes
from anysync.client.restore import Overwrite, run_restore
from anysync.errors import RestoreIncomplete


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a snapshot into a directory")
    p.add_argument("snapshot", help="snapshot ID (or a prefix of it), or 'latest'")
    p.add_argument("--target", required=True, type=Path, help="directory to restore into")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="restore only this path of the snapshot (repeat for more)",
    )
    p.add_argument(
        "--overwrite",
        choices=[o.value for o in Overwrite],
        default=Overwrite.NEVER.value,
        help="a file already in the target that differs from the snapshot's: keep it and "
        "list it (never, the default), replace it (if-changed), or write every file "
        "again (always)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_snapshot_filters(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        snap = common.resolve_snapshot(s, args)
        progress = common.progress("restore")
        if not args.include:  # the whole snapshot: its size is in its commit
            progress.total(snap.commit.stats.get("files", 0), snap.commit.stats.get("bytes", 0))
        stats = run_restore(
            s.repo,
            snap,
            args.target,
            args.include,
            progress,
            Overwrite(args.overwrite),
        )
    if args.json:
        common.print_json(
            {
                "snapshot": snap.id.hex(),
                "target": str(args.target),
                "files": stats.files,
                "dirs": stats.dirs,
                "symlinks": stats.symlinks,
                "bytes": stats.bytes,
                "unchanged": stats.unchanged,
                "kept": stats.kept,
                "failed": [{"path": p, "reason": r} for p, r in stats.failed],
            }
        )
    else:
        print(
            f"restored snapshot {snap.id.short()}: {stats.files} files, {stats.dirs} "
            f"directories, {stats.symlinks} symlinks, {human_bytes(stats.bytes)} into "
            f"{args.target}" + (f"; {stats.unchanged} already there" if stats.unchanged else "")
        )
        if stats.kept:
            _report_kept(stats.kept)
    if stats.failed:
        for path, reason in stats.failed if not args.json else []:
            print(f"failed: {common.shown(path)}: {common.shown(reason)}", file=sys.stderr)
        raise RestoreIncomplete(
            f"{len(stats.failed)} file(s) could not be restored (first: "
            f"{common.shown(stats.failed[0][0])}); the others are complete"
        )
    return 0


KEPT_SHOWN = 20


def _report_kept(kept: list[str]) -> None:
    print(
        f"kept {len(kept)} existing file(s) that differ from the snapshot; "
        "`--overwrite if-changed` replaces them:",
        file=sys.stderr,
    )
    for path in kept[:KEPT_SHOWN]:
        print(f"kept: {common.shown(path)}", file=sys.stderr)
    if len(kept) > KEPT_SHOWN:
        print(f"kept: … and {len(kept) - KEPT_SHOWN} more", file=sys.stderr)
