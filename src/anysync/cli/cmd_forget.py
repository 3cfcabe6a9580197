"""anysync forget: take snapshots out of the listing, by a retention policy or by ID.

    anysync forget --keep-daily 7 --keep-weekly 5 [--path P] [--device D] [--dry-run]
    anysync forget SNAPSHOT...

The policy applies to each backup source (host and paths) on its own, with restic's
rules. Sync folders follow their own retention (`anysync sync retention NAME`) unless
--path or --device narrows the run to backup sources. Forgetting appends an edit
commit; the data is freed by a later prune. Needs the manage right.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

from anysync.cli import common
from anysync.client import forget
from anysync.client.repo import retention
from anysync.client.repo.history import Snapshot

SHOWN = 50  # rows listed per ref


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("forget", help="forget snapshots by a retention policy or by ID")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="snapshot ID (or prefix)")
    add_policy_options(p)
    p.add_argument(
        "--path", action="append", default=[], help="only backup sources holding this path"
    )
    p.add_argument(
        "--device", action="append", default=[], help="only backup sources of this host/device"
    )
    p.add_argument(
        "--group-by",
        default=forget.GROUP_BY_SOURCE,
        metavar="GROUPING",
        help="apply the policy per group of: host,paths (the default: each backup source), "
        "host, paths, or '' (all backups together)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_password_option(p)
    p.set_defaults(run=run)


def add_policy_options(p: argparse.ArgumentParser) -> None:
    """restic's --keep-* options; parsed by policy_from (so errors are one line)."""
    p.add_argument("--keep-last", metavar="N", help="keep the N newest snapshots")
    for period in retention.PERIODS:
        p.add_argument(
            f"--keep-{period}",
            metavar="N",
            help=f"keep the newest of the N latest {period} buckets",
        )
    p.add_argument(
        "--keep-within", metavar="DURATION", help="keep all within e.g. 30d of the newest"
    )
    for period in retention.PERIODS:
        p.add_argument(
            f"--keep-within-{period}",
            metavar="DURATION",
            help=f"keep one {period} within DURATION of the newest",
        )


def policy_from(args: argparse.Namespace) -> retention.Policy:
    rules: dict[str, Any] = {
        f"keep_{name}": retention.parse_count(value)
        for name in ("last", *retention.PERIODS)
        if (value := getattr(args, f"keep_{name}")) is not None
    }
    rules |= {
        name: retention.Duration.parse(value)
        for name in ("keep_within", *(f"keep_within_{p}" for p in retention.PERIODS))
        if (value := getattr(args, name)) is not None
    }
    return retention.Policy(**rules)


def run(args: argparse.Namespace) -> int:
    req = forget.Request(
        policy=policy_from(args),
        ids=tuple(args.snapshots),
        paths=tuple(args.path),
        devices=tuple(args.device),
        dry_run=args.dry_run,
        group_by=args.group_by,
    )
    req.check()  # before asking for the password
    with common.open_session(args) as s:
        if not req.dry_run:
            common.ensure_manage(s, "forget")
            s.repo.maintenance = True  # an account over quota must be able to forget
        writer = forget.Writer(s.config.device_id, s.config.device_name, socket.gethostname())
        outcomes = forget.run_forget(s.repo, s.refs, s.remote, req, writer, common.print_warning)
    if args.json:
        common.print_json([_as_json(o) for o in outcomes])
        return 0
    for o in outcomes:
        _print(o, req.dry_run)
    if not outcomes:
        print("nothing to forget")
    return 0


def _when(s: Snapshot) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.commit.time_ns / 1e9))


def _print(o: forget.Outcome, dry_run: bool) -> None:
    p = o.plan
    print(f"{p.view.label}: keep {len(p.keep)}, forget {len(p.forget)} ({p.policy})")
    rows = [["keep", s.id.short(), _when(s), ", ".join(why)] for s, why in p.keep]
    rows += [["forget", s.id.short(), _when(s), ""] for s in p.forget]
    if rows:
        # A busy sync folder has thousands of versions: the JSON output has them all.
        common.print_table(["", "ID", "TIME", "REASONS"], rows[:SHOWN])
    if len(rows) > SHOWN:
        print(f"... and {len(rows) - SHOWN} more (see --json)")
    if dry_run and p.forget:
        print("(dry run: nothing forgotten)")
    elif o.edit is not None:
        print(f"recorded in edit commit {o.edit.id.short()}")
    print()


def _as_json(o: forget.Outcome) -> dict[str, object]:
    p = o.plan
    return {
        "ref": p.ref,
        "label": p.view.label,
        "kind": p.view.kind,
        "policy": p.policy,
        "keep": [
            {"id": s.id.hex(), "time": s.commit.time_ns / 1e9, "reasons": list(why)}
            for s, why in p.keep
        ],
        "forget": [{"id": s.id.hex(), "time": s.commit.time_ns / 1e9} for s in p.forget],
        "edit": o.edit.id.hex() if o.edit else None,
        "retired": bool(o.edit and o.edit.commit.edit and o.edit.commit.edit.retired),
    }
