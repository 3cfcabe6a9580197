"""anysync devices: list this account's devices; `devices revoke ID` cuts one off."""

from __future__ import annotations

import argparse
import time

from anysync.cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="list devices, or revoke one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    dsub = p.add_subparsers(dest="devices_cmd")
    r = dsub.add_parser("revoke", help="revoke a device: its token stops working at once")
    r.add_argument("device_id", type=int)
    p.set_defaults(run=run)


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def run(args: argparse.Namespace) -> int:
    remote = common.home().remote()
    try:
        if args.devices_cmd == "revoke":
            remote.revoke_device(args.device_id)
            print(f"device #{args.device_id} revoked")
            return 0
        devices = remote.list_devices()
    finally:
        remote.close()
    if args.json:
        common.print_json([d.__dict__ for d in devices])
        return 0
    rows = [
        [
            f"{d.id}{' *' if d.current else ''}",
            d.name,
            _when(d.created_at),
            _when(d.last_seen_at),
            "revoked" if d.revoked else "active",
        ]
        for d in devices
    ]
    common.print_table(["ID", "NAME", "ADDED", "LAST SEEN", "STATE"], rows)
    return 0
