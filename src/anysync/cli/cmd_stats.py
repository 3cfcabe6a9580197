"""anysync stats: how big the backups are.

--mode restore-size (default)  what restoring each snapshot would write, summed, and
                               for the latest one of each backup source
--mode raw                     what the account stores on the server (packs, after
                               dedup and compression), its quota, and what a prune
                               has condemned and not yet deleted
"""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.client.progress import human_bytes
from anysync.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="how big the backups are (restore size, or stored)")
    p.add_argument(
        "--mode",
        choices=["restore-size", "raw"],
        default="restore-size",
        help="restore-size (default): what restoring would write; raw: what the server stores",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_snapshot_filters(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.mode == "raw" and common.snapshot_filter(args) is not None:
        raise UsageError(
            "--mode raw is the account's whole storage; --path, --device and --tag select "
            "snapshots, for the restore size"
        )
    with common.open_session(args) as s:
        if args.mode == "raw":
            me = s.remote.whoami()
            raw = {
                "stored_bytes": me.used_bytes,
                "quota_bytes": me.quota_bytes,  # 0: no quota
                "condemned_bytes": me.condemned_bytes,
            }
        else:
            snaps = common.matching_snapshots(s, args)
            latest = {sn.commit.ref: sn for sn in snaps}.values()  # oldest first: last wins
            size = {
                "snapshots": len(snaps),
                "files": sum(sn.commit.stats.get("files", 0) for sn in snaps),
                "bytes": sum(sn.commit.stats.get("bytes", 0) for sn in snaps),
                "latest_files": sum(sn.commit.stats.get("files", 0) for sn in latest),
                "latest_bytes": sum(sn.commit.stats.get("bytes", 0) for sn in latest),
            }
    if args.mode == "raw":
        _print_raw(raw, args.json)
    else:
        _print_size(size, args.json)
    return 0


def _print_raw(raw: dict[str, int], as_json: bool) -> None:
    if as_json:
        common.print_json({"mode": "raw", **raw})
        return
    quota = raw["quota_bytes"]
    print(
        f"stored on the server: {human_bytes(raw['stored_bytes'])}"
        + (f" of a {human_bytes(quota)} quota" if quota else " (no quota)")
    )
    if raw["condemned_bytes"]:
        print(
            "condemned by a prune, deleted after the grace period: "
            f"{human_bytes(raw['condemned_bytes'])}"
        )


def _print_size(size: dict[str, int], as_json: bool) -> None:
    if as_json:
        common.print_json({"mode": "restore-size", **size})
        return
    print(
        f"{size['snapshots']} snapshots: {size['files']} files, "
        f"{human_bytes(size['bytes'])} if every one were restored"
    )
    print(
        f"latest of each backup source: {size['latest_files']} files, "
        f"{human_bytes(size['latest_bytes'])}"
    )
