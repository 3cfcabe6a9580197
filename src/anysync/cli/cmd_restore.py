"""anysync restore: write a snapshot, or part of it, into a directory. Verifies every blob."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anysync.cli import common
from anysync.client.forget import CountingEdits
from anysync.client.progress import human_bytes
from anysync.client.repo import history
from anysync.client.restore import run_restore
from anysync.errors import RestoreIncomplete


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a snapshot into a directory")
    p.add_argument("snapshot", help="snapshot ID (or a prefix of it), or 'latest'")
    p.add_argument("--target", required=True, type=Path, help="directory to restore into")
    p.add_argument("--include", default=None, help="restore only this path of the snapshot")
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        snap = history.resolve(
            s.refs, args.snapshot, common.print_warning, counting=CountingEdits(s.remote)
        )
        stats = run_restore(s.repo, snap, args.target, args.include, common.progress("restore"))
    print(
        f"restored snapshot {snap.id.short()}: {stats.files} files, {stats.dirs} directories, "
        f"{stats.symlinks} symlinks, {human_bytes(stats.bytes)} into {args.target}"
    )
    if stats.failed:
        for path, reason in stats.failed:
            print(f"failed: {path}: {reason}", file=sys.stderr)
        raise RestoreIncomplete(
            f"{len(stats.failed)} file(s) could not be restored (first: {stats.failed[0][0]}); "
            "the others are complete"
        )
    return 0
