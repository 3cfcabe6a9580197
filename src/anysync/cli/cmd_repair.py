"""anysync repair: mend what `anysync check` found (docs/prune-design.md §8).

    anysync repair index [--dry-run] [--json]
    anysync repair snapshots [--forget] [--dry-run] [--json]

`index` makes the server's index of every pack what the pack's own sealed header says.
`snapshots` replaces each damaged snapshot by a copy without the lost files. Both need
the manage right, or the password (asked on a terminal).
"""

from __future__ import annotations

import argparse
import socket

from anysync.cli import common
from anysync.client import forget, repair

SHOWN = 20  # lost paths listed per snapshot; --json has them all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "repair",
        help="repair the server's index, or snapshots that lost data",
        description=(
            "index: make the server's index of each pack what the pack's own encrypted "
            "header lists. snapshots: replace each damaged snapshot by a copy without the "
            "lost files (--forget also forgets the damaged originals). Run `anysync "
            "check` first. Needs the manage right or the password."
        ),
    )
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    index = what.add_parser("index", help="rebuild the server's index from the pack headers")
    snaps = what.add_parser("snapshots", help="replace damaged snapshots by repaired copies")
    snaps.add_argument("--forget", action="store_true", help="also forget the damaged originals")
    for q in (index, snaps):
        q.add_argument("--dry-run", action="store_true", help="show what is wrong; change nothing")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        common.add_password_option(q)
    index.set_defaults(run=run_index)
    snaps.set_defaults(run=run_snapshots)


def run_index(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        if not args.dry_run:
            common.ensure_manage(s, "repair")
        report = repair.repair_index(
            s.remote, s.keys, dry_run=args.dry_run, say=common.progress_lines(args)
        )
    if args.json:
        common.print_json(
            {
                "dry_run": report.dry_run,
                "packs": report.packs,
                "unreadable_packs": report.unreadable,
                "added": report.added,
                "removed": report.removed,
                "fixed": [
                    {"pack": f.pack_id.hex(), "added": f.added, "removed": f.removed}
                    for f in report.fixed
                ],
            }
        )
        return 0
    if report.unreadable:
        common.print_warning(
            f"{report.unreadable} pack(s) cannot be read; their index rows are left as they are"
        )
    verb = "would fix" if report.dry_run else "fixed"
    for f in report.fixed:
        print(f"pack {f.pack_id.hex()[:8]}: {verb} {f.added} row(s) added, {f.removed} removed")
    if not report.fixed:
        print(f"the index of all {report.packs} readable packs matches their headers")
    else:
        print(
            f"{verb} the index of {len(report.fixed)} of {report.packs} packs: "
            f"{report.added} row(s) added, {report.removed} removed"
        )
    return 0


def run_snapshots(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        if not args.dry_run:
            common.ensure_manage(s, "repair")
            s.repo.maintenance = True  # a full account must be able to repair
        dropped = repair.drop_lost_packs(s.remote, s.repo, dry_run=args.dry_run)
        if dropped and not args.json:
            verb = "would drop" if args.dry_run else "dropped"
            print(
                f"{verb} the records of {dropped} pack(s) the server lost: a device that "
                "still has their files uploads them again on its next backup or sync"
            )
        writer = forget.Writer(s.config.device_id, s.config.device_name, socket.gethostname())
        report = repair.repair_snapshots(
            s.repo,
            s.refs,
            s.remote,
            writer,
            common.print_warning,
            forget=args.forget,
            dry_run=args.dry_run,
        )
    if args.json:
        common.print_json(
            {
                "dry_run": report.dry_run,
                "forget": report.forget,
                "lost_packs": dropped,
                "refs": [_ref_json(r) for r in report.refs],
            }
        )
        return 0
    for r in report.refs:
        _print_ref(r, report.dry_run)
    if not report.refs:
        print("no snapshot has lost data")
    elif report.dry_run:
        print("(dry run: nothing repaired)")
    return 0


def _print_ref(r: repair.RefRepair, dry_run: bool) -> None:
    print(f"{r.label}:")
    done = [r.state] if r.state else []
    for d in [*done, *r.snapshots]:
        what = (
            "current state (left as it is)" if d is r.state else f"snapshot {d.original.id.short()}"
        )
        made = f" -> {d.replacement.id.short()}" if d.replacement else ""
        print(f"  {what}{made}: {len(d.lost)} file(s) or directories lost")
        for path in d.lost[:SHOWN]:
            print(f"    {path}")
        if len(d.lost) > SHOWN:
            print(f"    … and {len(d.lost) - SHOWN} more")
    if r.edit is not None:
        print(f"  recorded in edit commit {r.edit.id.short()}")


def _ref_json(r: repair.RefRepair) -> dict[str, object]:
    def one(d: repair.Repaired) -> dict[str, object]:
        return {
            "original": d.original.id.hex(),
            "replacement": d.replacement.id.hex() if d.replacement else None,
            "lost": d.lost,
        }

    return {
        "ref": r.ref,
        "label": r.label,
        "state": one(r.state) if r.state else None,
        "snapshots": [one(d) for d in r.snapshots],
        "edit": r.edit.id.hex() if r.edit else None,
    }
