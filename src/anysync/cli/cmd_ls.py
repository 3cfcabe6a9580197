"""anysync ls: list the files of a snapshot, or of a directory in it."""

from __future__ import annotations

import argparse
import os
import stat
import time

from anysync.cli import common
from anysync.client.repo.tree import EntryType, TreeEntry, trail
from anysync.errors import NotFound


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ls", help="list files in a snapshot")
    p.add_argument("snapshot", help="snapshot ID (or a prefix of it), or 'latest'")
    p.add_argument("path", nargs="?", default="", help="a directory or file inside the snapshot")
    p.add_argument("--recursive", "-r", action="store_true", help="list sub-directories too")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_snapshot_filters(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


_TYPE = {EntryType.FILE: "file", EntryType.DIR: "dir", EntryType.SYMLINK: "symlink"}
_MODE_CHAR = {
    EntryType.FILE: stat.S_IFREG,
    EntryType.DIR: stat.S_IFDIR,
    EntryType.SYMLINK: stat.S_IFLNK,
}


def run(args: argparse.Namespace) -> int:
    out: list[tuple[str, TreeEntry]] = []
    with common.open_session(args) as s:
        snap = common.resolve_snapshot(s, args)
        entries = s.repo.load_tree(snap.commit.tree)
        parts = [os.fsencode(p) for p in args.path.strip("/").split("/") if p]
        found = trail(s.repo, entries, parts)
        if len(found) < len(parts):
            raise NotFound(f"{args.path} is not in snapshot {snap.id.short()}")
        dirs = found
        if found and found[-1].subtree is None:  # a file or symlink: list it alone
            entries, dirs = found[-1:], found[:-1]
        elif found and found[-1].subtree is not None:
            entries = s.repo.load_tree(found[-1].subtree)
        prefix = "".join(e.display_name + "/" for e in dirs)

        def walk(items: list[TreeEntry], base: str) -> None:
            for e in items:
                out.append((base + e.display_name, e))
                if args.recursive and e.type is EntryType.DIR and e.subtree is not None:
                    walk(s.repo.load_tree(e.subtree), base + e.display_name + "/")

        walk(entries, prefix)
    if args.json:
        common.print_json(
            [
                {
                    "path": path,
                    "type": _TYPE[e.type],
                    "mode": e.mode,
                    "size": e.size,
                    "mtime": e.mtime_ns / 1e9,
                    **({"target": os.fsdecode(e.target)} if e.type is EntryType.SYMLINK else {}),
                }
                for path, e in out
            ]
        )
        return 0
    for path, e in out:
        mode = stat.filemode(_MODE_CHAR[e.type] | e.mode)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime_ns / 1e9))
        suffix = f" -> {os.fsdecode(e.target)}" if e.type is EntryType.SYMLINK else ""
        print(f"{mode} {e.size:>12} {when} {path}{'/' if e.type is EntryType.DIR else ''}{suffix}")
    return 0
