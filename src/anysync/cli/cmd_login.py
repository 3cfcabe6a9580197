"""anysync login: register this device with an existing account, with the password alone."""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.cli.cmd_signup import add_trust_options
from anysync.client import session


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("login", help="log this device in to an existing account")
    p.add_argument("--server", required=True, help="HOST:PORT of anysync-server")
    p.add_argument("--email", required=True)
    p.add_argument("--device-name", default=None, help="name of this device (default: host name)")
    add_trust_options(p)
    common.add_password_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    h = common.home()
    password = common.read_password(args)
    cert = session.pin_certificate(
        args.server,
        args.fingerprint,
        args.trust_new,
        common.interactive_confirm(),
    )
    cfg = session.login(
        h,
        address=args.server,
        email=args.email,
        password=password,
        device_name=args.device_name or common.default_device_name(),
        cert=cert,
    )
    print(
        f"logged in as {cfg.email} on {cfg.server}; "
        f"this device is #{cfg.device_id} ({cfg.device_name})"
    )
    return 0
