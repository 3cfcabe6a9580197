"""anysync dump: write one file of a snapshot to standard output (`| less`, `> copy`).

The content is verified blob by blob as it streams; a failed blob ends the command with
its error after what came before it was written (as `cat` of a damaged file would)."""

from __future__ import annotations

import argparse
import os
import sys

from anysync.cli import common
from anysync.client.repo.tree import EntryType, trail
from anysync.errors import NotFound, UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dump", help="write one file of a snapshot to standard output")
    p.add_argument("snapshot", help="snapshot ID (or a prefix of it), or 'latest'")
    p.add_argument("path", help="the file inside the snapshot, as `anysync ls` shows it")
    common.add_snapshot_filters(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if sys.stdout.isatty():
        # A binary file on a terminal can leave it unusable; restic refuses the same way.
        raise UsageError("standard output is a terminal: redirect it (> FILE) or pipe it (| less)")
    with common.open_session(args) as s:
        snap = common.resolve_snapshot(s, args)
        parts = [os.fsencode(p) for p in args.path.strip("/").split("/") if p]
        found = trail(s.repo, s.repo.load_tree(snap.commit.tree), parts)
        if not parts or len(found) < len(parts):
            raise NotFound(f"{args.path} is not in snapshot {snap.id.short()}; see `anysync ls`")
        entry = found[-1]
        if entry.type is not EntryType.FILE:
            kind = "a directory" if entry.type is EntryType.DIR else "a symlink"
            raise UsageError(
                f"{args.path} is {kind}; dump writes files (`anysync restore --include` "
                "restores the rest)"
            )
        out = sys.stdout.buffer
        for piece in s.repo.stream(entry.chunks, entry.size):
            out.write(piece)
        out.flush()
    return 0
