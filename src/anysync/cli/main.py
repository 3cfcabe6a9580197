"""Entry point of `anysync`. Maps errors to one stderr line and an exit code.

Exit codes: 0 success, 1 other error, 2 usage, 3 wrong password, 4 server unreachable
or certificate mismatch, 5 not authorised (revoked device, rate limit), 6 integrity
(tampered or corrupt data), 7 not found / already exists, 8 concurrent change,
9 quota exceeded, 10 local state unreadable, 11 restore incomplete, 12 disk full,
13 snapshot saved; some paths could not be read (listed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from anysync import __version__
from anysync.cli import (
    cmd_backup,
    cmd_check,
    cmd_devices,
    cmd_drive,
    cmd_forget,
    cmd_keys,
    cmd_login,
    cmd_ls,
    cmd_mount,
    cmd_passwd,
    cmd_prune,
    cmd_repair,
    cmd_restore,
    cmd_signup,
    cmd_snapshots,
    cmd_sync,
    cmd_versions,
)
from anysync.errors import AnySyncError

COMMANDS = [
    cmd_signup,
    cmd_login,
    cmd_backup,
    cmd_snapshots,
    cmd_ls,
    cmd_mount,
    cmd_check,
    cmd_forget,
    cmd_prune,
    cmd_repair,
    cmd_restore,
    cmd_sync,
    cmd_drive,
    cmd_versions,
    cmd_devices,
    cmd_keys,
    cmd_passwd,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anysync",
        description="End-to-end encrypted backup and sync with your own anysync-server.",
        epilog=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"anysync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="anysync: %(levelname)s: %(message)s",
    )
    try:
        code: int = args.run(args)
        return code
    except AnySyncError as exc:
        print(f"anysync: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("anysync: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file problem no command put into words: still one line
        logging.getLogger("anysync").debug("unhandled OSError", exc_info=True)
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"anysync: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, details with --verbose
        logging.getLogger("anysync").debug("unexpected error", exc_info=True)
        print(f"anysync: internal error: {exc!r} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
