"""anysync ls: list the files of a snapshot, or of a directory in it."""

from __future__ import annotations

import argparse
import os
import stat
import time

from anysync.cli import common
from anysync.cli.cmd_snapshots import print_warning
from anysync.client.repo import history
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import NotFound


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ls", help="list files in a snapshot")
    p.add_argument("snapshot", help="snapshot ID (or a prefix of it), or 'latest'")
    p.add_argument("path", nargs="?", default="", help="a directory or file inside the snapshot")
    p.add_argument("--recursive", "-r", action="store_true")
    p.add_argument("--json", action="store_true")
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
        snap = history.resolve(s.repo, s.state, args.snapshot, warn=print_warning)
        entries = s.repo.load_tree(snap.commit.tree)
        prefix = ""
        for part in [p for p in args.path.strip("/").split("/") if p]:
            match = next((e for e in entries if e.name == os.fsencode(part)), None)
            if match is None:
                raise NotFound(f"{args.path} is not in snapshot {snap.id.short()}")
            prefix = f"{prefix}{part}/"
            if match.type is not EntryType.DIR or match.subtree is None:
                entries, prefix = [match], prefix[: -len(part) - 1]
                break
            entries = s.repo.load_tree(match.subtree)

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
