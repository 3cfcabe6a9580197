"""anysync devices: list this account's devices and their rights; revoke one; change
what one may do (append-only, write, manage: docs/prune-design.md §3)."""

from __future__ import annotations

import argparse
import time

from anysync.cli import common
from anysync.errors import UsageError

RIGHTS = ("append", "write", "manage")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="list devices and their rights, revoke one, change rights")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    dsub = p.add_subparsers(dest="devices_cmd")
    r = dsub.add_parser("revoke", help="revoke a device: its token stops working at once")
    r.add_argument("device_id", type=int, help="the device's ID, from `anysync devices`")
    r.add_argument("--yes", action="store_true", help="revoke this very device without asking")
    n = dsub.add_parser("rename", help="give a device a new name (shown in `snapshots`)")
    n.add_argument("device_id", type=int, help="the device's ID, from `anysync devices`")
    n.add_argument(
        "name", type=common.device_name, help="its new name (64 printable characters at most)"
    )
    s = dsub.add_parser(
        "set-rights",
        help="set what a device may do: append (add only), write (add and move refs back), "
        "manage (also forget and prune)",
    )
    s.add_argument("device_id", type=int, help="the device's ID, from `anysync devices`")
    s.add_argument(
        "rights",
        choices=RIGHTS,
        help="append: add only; write: also delete; manage: also forget and prune",
    )
    a = dsub.add_parser("add-rights", help="raise a device's rights (needs manage), e.g. manage")
    a.add_argument("device_id", type=int, help="the device's ID, from `anysync devices`")
    a.add_argument("rights", choices=RIGHTS[1:], help="the right to add")
    o = dsub.add_parser(
        "append-only", help="let a device only add data: it can never delete or rewind"
    )
    o.add_argument("device_id", type=int, help="the device's ID, from `anysync devices`")
    p.set_defaults(run=run)


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def _confirm_revoking_self(args: argparse.Namespace, me: int) -> None:
    """Revoking the device you type on logs it out: asked, or said with --yes."""
    if args.device_id != me or args.yes:
        return
    ask = common.interactive_confirm()
    if ask is None:
        raise UsageError(
            f"device #{me} is this device: revoking it logs it out of the server; "
            "add --yes, or run `anysync logout`"
        )
    if not ask(f"Device #{me} is this device. Revoke it and log it out of the server?"):
        raise UsageError("nothing was revoked")


def run(args: argparse.Namespace) -> int:
    h = common.home()
    me = h.config().device_id
    if args.devices_cmd == "revoke":
        _confirm_revoking_self(args, me)
    remote = h.remote()
    try:
        if args.devices_cmd == "revoke":
            remote.revoke_device(args.device_id)
            print(f"device #{args.device_id} revoked")
            if args.device_id == me:
                print("this device is logged out of the server: `anysync login` to use it again")
            return 0
        if args.devices_cmd == "rename":
            remote.rename_device(args.device_id, args.name)
            print(f"device #{args.device_id} is now called {args.name!r}")
            return 0
        if args.devices_cmd in ("set-rights", "add-rights", "append-only"):
            rights = "append" if args.devices_cmd == "append-only" else args.rights
            remote.set_device_rights(args.device_id, rights)
            print(f"device #{args.device_id} now has the {rights} right")
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
            d.rights or "?",
            _when(d.created_at),
            _when(d.last_seen_at),
            "revoked" if d.revoked else "active",
        ]
        for d in devices
    ]
    common.print_table(["ID", "NAME", "RIGHTS", "ADDED", "LAST SEEN", "STATE"], rows)
    return 0
