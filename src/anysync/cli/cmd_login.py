"""anysync login: register this device with an existing account, with the password alone.

On a home that was logged out, or whose login stopped working (device revoked, server
reinstalled with a new certificate), it logs the same account in again and keeps the
home's sync state; session.previous_login says when it may."""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.cli.cmd_signup import add_trust_options
from anysync.client import session


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("login", help="log this device in to an existing account")
    common.add_server_option(p)
    p.add_argument("--email", required=True, help="the account's e-mail address")
    common.add_device_name_option(p)
    add_trust_options(p)
    common.add_password_option(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    h = common.home()
    # Before the password: a home that cannot take this login says so at once.
    previous = session.previous_login(h, args.email)
    password = common.read_password(args)
    cert = session.pin_certificate(
        args.server,
        args.fingerprint,
        args.trust_new,
        common.interactive_confirm(),
        known=previous.fingerprint if previous else None,
        warn=common.print_warning,
    )
    cfg = session.login(
        h,
        address=args.server,
        email=args.email,
        password=password,
        device_name=args.device_name
        or (previous.device_name if previous else None)
        or common.default_device_name(),
        cert=cert,
        previous=previous,
    )
    again = " again (sync state and caches kept)" if previous else ""
    common.print_account(cfg, args.json, f"logged in{again}")
    return 0
