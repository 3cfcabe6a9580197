"""anysync signup: create an account on a server and make this device its first."""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.client import session


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("signup", help="create an account on a server")
    common.add_server_option(p)
    p.add_argument("--email", required=True, help="the new account's e-mail address")
    p.add_argument("--invite", default="", help="invite code from `anysync-server invite create`")
    common.add_device_name_option(p)
    add_trust_options(p)
    common.add_password_option(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def add_trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fingerprint", help="expected SHA-256 fingerprint of the server certificate")
    p.add_argument(
        "--trust-new",
        action="store_true",
        help="trust the server's certificate without asking (scripts; first use only)",
    )


def run(args: argparse.Namespace) -> int:
    h = common.home()
    password = common.read_password(args, prompt="New password: ", confirm=True)
    cert = session.pin_certificate(
        args.server,
        args.fingerprint,
        args.trust_new,
        common.interactive_confirm(),
    )
    cfg = session.signup(
        h,
        address=args.server,
        email=args.email,
        invite=args.invite,
        password=password,
        device_name=args.device_name or common.default_device_name(),
        cert=cert,
    )
    common.print_account(cfg, args.json, "signed up")
    return 0
