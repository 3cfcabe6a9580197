"""anysync diff: what changed between two snapshots, path by path.

  +  added        -  removed        M  content or size changed
  T  type changed (a file became a directory, ...)      U  mode or time changed only

A directory whose listing has the same ID in both is identical and is not entered, so
a diff costs what changed, not the size of the snapshots."""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.client.forget import CountingEdits
from anysync.client.repo import history
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.types import BlobId


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("diff", help="what changed between two snapshots")
    p.add_argument("first", help="snapshot ID (or prefix), or 'latest'")
    p.add_argument("second", help="snapshot ID (or prefix), or 'latest'")
    p.add_argument("--json", action="store_true", help="one object per change, as a list")
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        counting = CountingEdits(s.remote)
        a, b = (
            history.resolve(s.refs, spec, common.print_warning, counting=counting)
            for spec in (args.first, args.second)
        )
        changes = list(diff_trees(s.repo, a.commit.tree, b.commit.tree))
    if args.json:
        common.print_json([{"change": c, "path": p} for c, p in changes])
        return 0
    for change, path in changes:
        print(f"{change}  {common.shown(path)}")
    counts = {c: sum(1 for x, _ in changes if x == c) for c in "+-MTU"}
    print(
        f"{a.id.short()} → {b.id.short()}: {counts['+']} added, {counts['-']} removed, "
        f"{counts['M']} changed, {counts['T']} changed type, {counts['U']} metadata only"
    )
    return 0


def diff_trees(repo: Repository, old: BlobId, new: BlobId, base: str = "") -> list[tuple[str, str]]:
    """(change, path) for every difference below the trees `old` and `new`, sorted."""
    if old == new:
        return []
    before = {e.name: e for e in repo.load_tree(old)}
    after = {e.name: e for e in repo.load_tree(new)}
    out: list[tuple[str, str]] = []
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was is None or now is None:
            sign, entry = ("+", now) if was is None else ("-", was)
            assert entry is not None
            slash = "/" if entry.type is EntryType.DIR else ""
            out.append((sign, base + entry.display_name + slash))
            continue
        path = base + now.display_name
        change = compare(was, now)
        if change is not None:
            out.append((change, path))
        if was.subtree is not None and now.subtree is not None:  # both directories
            out += diff_trees(repo, was.subtree, now.subtree, path + "/")
    return out


def compare(was: TreeEntry, now: TreeEntry) -> str | None:
    """How one path changed ('M', 'T', 'U'), or None. A directory's own change is its
    metadata; what changed inside it is listed by path."""
    if was.type is not now.type:
        return "T"
    if was.type is EntryType.FILE and (was.chunks != now.chunks or was.size != now.size):
        return "M"
    if was.type is EntryType.SYMLINK and was.target != now.target:
        return "M"
    if was.type is not EntryType.DIR and (was.mode, was.mtime_ns) != (now.mode, now.mtime_ns):
        return "U"
    return None
