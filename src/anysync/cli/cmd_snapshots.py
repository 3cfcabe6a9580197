"""anysync snapshots: list every backup snapshot of the account, oldest first.

Forgotten snapshots are left out; an edit commit that does not count (written without
the manage right) is warned about and ignored (repo/history.py)."""

from __future__ import annotations

import argparse
import time

from anysync.cli import common
from anysync.client.progress import human_bytes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snapshots", help="list snapshots")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_snapshot_filters(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        snaps = common.matching_snapshots(s, args)
        # Today's names: a device renamed since its backups is shown by its new name.
        names = {d.id: d.name for d in s.remote.list_devices()} if not args.json else {}
    if args.json:
        common.print_json(
            [
                {
                    "id": sn.id.hex(),
                    "time": sn.commit.time_ns / 1e9,
                    "hostname": sn.commit.hostname,
                    "device_id": sn.commit.device_id,
                    "device": sn.commit.device,
                    "paths": list(sn.commit.paths),
                    "parents": [p.hex() for p in sn.commit.parents],
                    "message": sn.commit.message,
                    "tags": list(sn.commit.tags),
                    "stats": sn.commit.stats,
                }
                for sn in snaps
            ]
        )
        return 0
    any_message = any(sn.commit.message for sn in snaps)
    any_tags = any(sn.commit.tags for sn in snaps)
    rows = [
        [
            sn.id.short(),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sn.commit.time_ns / 1e9)),
            names.get(sn.commit.device_id, sn.commit.device),
            human_bytes(sn.commit.stats.get("bytes", 0)),
            ", ".join(sn.commit.paths),
        ]
        + ([",".join(sn.commit.tags)] if any_tags else [])
        + ([sn.commit.message] if any_message else [])
        for sn in snaps
    ]
    headers = ["ID", "TIME", "DEVICE", "SIZE", "PATHS"]
    headers += (["TAGS"] if any_tags else []) + (["MESSAGE"] if any_message else [])
    common.print_table(headers, rows)
    print(f"{len(snaps)} snapshots")
    return 0
