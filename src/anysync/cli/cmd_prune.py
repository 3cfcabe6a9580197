"""anysync prune: free the space of packs no snapshot needs (docs/prune-design.md §6)."""

from __future__ import annotations

import argparse
import time

from anysync.cli import common
from anysync.client.progress import human_bytes
from anysync.client.prune import Pruner, PruneResult
from anysync.client.prune_plan import parse_max_unused


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "prune",
        help="delete the packs no snapshot needs, repack the emptiest ones",
        description=(
            "Mark everything every ref and every kept ref version reaches, condemn the packs "
            "that hold none of it and repack the emptiest others. Condemned packs are "
            "deleted after the server's grace period. Safe next to running backups and "
            "syncs. Needs a device with the manage right, or the password (asked on a "
            "terminal). Exit 5: not allowed; 8: the account kept changing."
        ),
    )
    p.add_argument(
        "--max-unused",
        default="5%",
        metavar="LIMIT",
        help="unused space to tolerate: a share of the total (5%%, the default) or a size "
        "(500M, 2G), or 'unlimited' (no repacking)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    max_unused = parse_max_unused(args.max_unused)
    with common.open_session(args) as s:
        if not args.dry_run:
            common.ensure_manage(s, "prune")
        account = s.remote.whoami()
        pruner = Pruner(
            s.remote,
            s.repo,
            max_unused=max_unused,
            min_pack_age=account.min_pack_age_seconds,
            say=common.progress_lines(args),
        )
        result = pruner.run(dry_run=args.dry_run)
    _print(result, args.json)
    return 0


def _when(ts: int) -> str:
    if ts <= time.time():
        return "now"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _print(r: PruneResult, as_json: bool) -> None:
    p = r.plan
    assert p is not None
    if as_json:
        common.print_json(
            {
                "dry_run": r.dry_run,
                "dead_packs": len(p.dead),
                "dead_bytes": p.dead_bytes,
                "repack_packs": len(p.repack),
                "repack_bytes": p.repack_bytes,
                "live_bytes": p.live_bytes,
                "unused_bytes": p.unused_bytes,
                "young_packs": p.young,
                "missing_blobs": len(p.missing),
                "condemned_packs": r.condemned_packs,
                "condemned_bytes": r.condemned_bytes,
                "skipped_young": r.skipped_young,
                "repacked_packs": r.repacked_packs,
                "uploaded_packs": r.uploaded_packs,
                "uploaded_bytes": r.uploaded_bytes,
                "freed_bytes": r.freed_bytes,
                "reap_at": r.reap_at,
                "rewinds": r.rewinds,
                "problems": r.problems,
            }
        )
        return
    for line in r.rewinds + r.problems:
        common.print_warning(line)
    if p.missing:
        common.print_warning(
            f"{len(p.missing)} blobs the snapshots need are in no pack; run `anysync check`"
        )
    if r.dry_run:
        print(
            f"would condemn {len(p.dead)} unused packs ({human_bytes(p.dead_bytes)}) and "
            f"repack {len(p.repack)} ({human_bytes(p.repack_bytes)}); "
            f"{human_bytes(p.live_bytes)} in use, {human_bytes(p.unused_bytes)} unused after"
        )
        return
    if not r.condemned_packs:
        print(f"nothing to prune; {human_bytes(p.unused_bytes)} unused")
        return
    print(
        f"freed {human_bytes(max(r.freed_bytes, 0))}: condemned {r.condemned_packs} packs, "
        f"repacked {r.repacked_packs} into {r.uploaded_packs} "
        f"({human_bytes(r.uploaded_bytes)} uploaded); deleted {_when(r.reap_at)}; "
        f"{human_bytes(p.unused_bytes)} left unused"
    )
