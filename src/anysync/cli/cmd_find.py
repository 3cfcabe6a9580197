"""anysync find: which snapshots hold a path matching a pattern.

The pattern is a shell glob (`*.odt`, `report-202?.pdf`) matched against each entry's
name, or against its whole path inside the snapshot when it contains a '/'
(`Documents/taxes/*`). Each directory listing is searched once, whatever the number of
snapshots that share it, so the cost is that of the distinct listings."""

from __future__ import annotations

import argparse
import fnmatch
import time

from anysync.cli import common
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType
from anysync.types import BlobId


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("find", help="which snapshots hold a path matching a pattern")
    p.add_argument("pattern", help="a glob on the name ('*.odt'), or on the path if it has '/'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_snapshot_filters(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    pattern = args.pattern.strip("/")
    with common.open_session(args) as s:
        finder = _Finder(s.repo, pattern)
        found = [
            (sn, hits)
            for sn in common.matching_snapshots(s, args)
            if (hits := finder.in_tree(sn.commit.tree))
        ]
    if args.json:
        common.print_json(
            [{"snapshot": sn.id.hex(), "time": sn.commit.time_ns / 1e9, "paths": hits}
             for sn, hits in found]
        )  # fmt: skip
        return 0
    for sn, hits in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sn.commit.time_ns / 1e9))
        print(f"snapshot {sn.id.short()} of {when}:")
        for h in hits:
            print(f"  {common.shown(h)}")
    if not found:
        print(f"no snapshot holds a path matching {args.pattern!r}")
    return 0


class _Finder:
    def __init__(self, repo: Repository, pattern: str) -> None:
        self.repo = repo
        self.pattern = pattern
        self.by_path = "/" in pattern
        # tree ID → matching paths relative to that tree. Matching on names only, a
        # listing's answer does not depend on where it sits: shared subtrees are
        # searched once. By path it does, so the memo is keyed by the base too.
        self._memo: dict[tuple[BlobId, str], list[str]] = {}

    def in_tree(self, tree: BlobId, base: str = "") -> list[str]:
        key = (tree, base if self.by_path else "")
        if key not in self._memo:
            self._memo[key] = self._search(tree, base if self.by_path else "")
        hits = self._memo[key]
        return hits if self.by_path else [base + h for h in hits]

    def _search(self, tree: BlobId, base: str) -> list[str]:
        out: list[str] = []
        for e in self.repo.load_tree(tree):
            path = base + e.display_name
            subject = path if self.by_path else e.display_name
            if fnmatch.fnmatchcase(subject, self.pattern):
                out.append(path + ("/" if e.type is EntryType.DIR else ""))
            if e.type is EntryType.DIR and e.subtree is not None:
                out += self.in_tree(e.subtree, path + "/")
        return out
