"""anysync keys: how this device keeps the account's keys (device.keys).

signup and login leave them unprotected, mode 0600, like an SSH key without a
passphrase: every command runs without a password. `keys protect keyring` puts the key
that opens them in the desktop keyring (Secret Service); `keys protect passphrase`
asks a device passphrase at each command instead. `--from-password` writes the file
again from the account password, for a lost keyring entry or a forgotten passphrase.
"""

from __future__ import annotations

import argparse

from anysync.cli import common
from anysync.client import session
from anysync.client.devicekeys import Protection

_SAID = {
    Protection.NONE: "unprotected (mode 0600, like an SSH key without a passphrase)",
    Protection.KEYRING: "protected by the desktop keyring",
    Protection.PASSPHRASE: "protected by a device passphrase",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="how this device keeps the account keys (device.keys)")
    ksub = p.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    st = ksub.add_parser("status", help="say how this device's keys are kept")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    protect = ksub.add_parser(
        "protect",
        help="keep the keys unprotected (none), in the desktop keyring, or under a passphrase",
    )
    protect.add_argument(
        "protection",
        choices=[p.value for p in Protection],
        help="none: a 0600 key file; keyring: the desktop keyring holds its key; "
        "passphrase: asked at each command",
    )
    protect.add_argument(
        "--from-password",
        action="store_true",
        help="open the keys with the account password instead of their current protection "
        "(a lost keyring entry, a forgotten passphrase)",
    )
    common.add_password_option(protect)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    home = common.home()
    if args.keys_cmd == "status":
        key_file = home.device_key_file()
        path = home.root / "device.keys"
        if args.json:
            common.print_json(
                {
                    "path": str(path),
                    "protection": None if key_file is None else key_file.protection.value,
                }
            )
        elif key_file is None:
            print(f"{path}: not written yet (the next command writes it, with the password)")
        else:
            print(f"{path}: {_SAID[key_file.protection]}")
        return 0
    protection = Protection(args.protection)
    if args.from_password:
        master = home.unlock_with_password(common.read_password(args))
    else:
        with common.open_session(args) as s:
            master = s.keys
    passphrase = None
    if protection is Protection.PASSPHRASE:
        passphrase = common.read_passphrase(
            "New device passphrase: ", env=common.NEW_PASSPHRASE_ENV, confirm=True
        )
    session.protect_device_keys(home, protection, master, passphrase)
    print(f"this device's keys are now {_SAID[protection]}")
    return 0
