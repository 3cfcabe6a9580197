"""anysync passwd: change the password. Re-wraps master.keys; no data is re-encrypted."""

from __future__ import annotations

import argparse
from pathlib import Path

from anysync.cli import common
from anysync.client import session


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("passwd", help="change the account password")
    common.add_password_option(p)
    p.add_argument(
        "--new-password-file",
        type=Path,
        help="read the new password from this file; default: $ANYSYNC_NEW_PASSWORD or a prompt",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    old = common.read_password(args, prompt="Current password: ")
    new = common.read_password(
        args,
        env="ANYSYNC_NEW_PASSWORD",
        file_attr="new_password_file",
        prompt="New password: ",
        confirm=True,
    )
    session.change_password(common.home(), old, new)
    print(
        "password changed; other devices keep working (their keys are unchanged) and need "
        "the new password only to log in again or change it"
    )
    return 0
