"""anysync logout: this device stops being logged in; its sync state stays for the next login."""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.client import session


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "logout",
        help="log this device out (its sync state stays for the next login)",
        description="Revoke this device's token at the server (when it can be reached) and "
        "delete the token and the account keys from this device. Sync folders, their state "
        "and caches stay: `anysync login` as the same account takes them up again.",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = session.logout(common.home())
    cfg = out.config
    print(f"logged out of {cfg.email} on {cfg.server}; the keys are gone from this device")
    if out.revoked:
        print(f"device #{cfg.device_id} ({cfg.device_name}) is revoked on the server")
    else:
        common.print_warning(
            f"the server did not revoke device #{cfg.device_id} ({out.why_not}); revoke it "
            f"from another device: `anysync devices revoke {cfg.device_id}`"
        )
    return 0
