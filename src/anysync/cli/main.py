"""Entry point of `anysync`. Maps errors to one stderr line and an exit code.

Exit codes: 0 success, 1 other error, 2 usage, 3 wrong password, 4 server unreachable
or certificate mismatch, 5 not authorised (revoked device, rate limit), 6 integrity
(tampered or corrupt data), 7 not found / already exists, 8 concurrent change,
9 quota exceeded, 10 local state unreadable, 11 restore incomplete, 12 disk full,
13 snapshot saved; some paths could not be read (listed), 130 interrupted,
141 the reader of the output went away (`anysync ls | head`).

Environment: ANYSYNC_HOME is this device's state (default ~/.config/anysync);
ANYSYNC_PASSWORD gives signup, login and passwd the account password without a prompt
(or --password-file FILE; never on the command line). Every other command unlocks with
this device's key file and asks for nothing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from anysync import __version__
from anysync.errors import AnySyncError

# Every command: name -> (its module in anysync.cli, its line in `anysync --help`).
#
# Only the module of the command being run is imported; its register(sub) adds the
# command with its options and subcommands (and the other commands it implements,
# like cmd_drive's pin). Every other command is a bare name with its help line from
# this table, repeated from its module's add_parser (a test keeps the two equal). So a
# command module imports what it needs at its top, however heavy (grpc, cryptography,
# the sync engine), and no other command pays for it (issue #15: with every module
# imported, `anysync --help` took 0.37 s of CPU and `anysync snapshots` 0.42 s).
# A new command: a cmd_*.py with register(sub) and run(args), and a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "signup": ("cmd_signup", "create an account on a server"),
    "login": ("cmd_login", "log this device in to an existing account"),
    "logout": (
        "cmd_logout",
        "log this device out (its sync state stays for the next login)",
    ),
    "backup": ("cmd_backup", "back up files and directories as a new snapshot"),
    "snapshots": ("cmd_snapshots", "list snapshots"),
    "ls": ("cmd_ls", "list files in a snapshot"),
    "dump": ("cmd_dump", "write one file of a snapshot to standard output"),
    "diff": ("cmd_diff", "what changed between two snapshots"),
    "find": ("cmd_find", "which snapshots hold a path matching a pattern"),
    "stats": ("cmd_stats", "how big the backups are (restore size, or stored)"),
    "mount": ("cmd_mount", "browse every snapshot in a read-only directory (FUSE)"),
    "check": ("cmd_check", "verify every snapshot: history, directory listings, index, packs"),
    "forget": ("cmd_forget", "forget snapshots by a retention policy or by ID"),
    "prune": ("cmd_prune", "delete the packs no snapshot needs, repack the emptiest ones"),
    "repair": ("cmd_repair", "repair the server's index, or snapshots that lost data"),
    "restore": ("cmd_restore", "restore a snapshot into a directory"),
    "sync": ("cmd_sync", "two-way sync of folders between devices"),
    "drive": ("cmd_drive", "a sync folder as a drive: every file visible, on demand"),
    "pin": ("cmd_drive", "keep files of a drive on this device (downloads them now)"),
    "unpin": ("cmd_drive", "let pinned files of a drive be evicted again"),
    "evict": ("cmd_drive", "free the local space of files of a drive now"),
    "versions": ("cmd_versions", "list every version of a file in a sync folder"),
    "restore-version": ("cmd_versions", "bring back an earlier version of a file"),
    "devices": ("cmd_devices", "list devices and their rights, revoke one, change rights"),
    "keys": ("cmd_keys", "how this device keeps the account keys (device.keys)"),
    "passwd": ("cmd_passwd", "change the account password"),
    "service": ("cmd_service", "run sync and scheduled backups as systemd user units"),
    "completion": ("cmd_completion", "print a shell completion script (bash or zsh)"),
}


def command_in(argv: Sequence[str]) -> str | None:
    """The command `argv` runs: its first word that is not an option. (No global option
    takes a value; one that did would have to be skipped here.)"""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str], complete: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv`: complete for the command it runs, names and help lines
    for the others (COMMANDS); with `complete`, complete for every command (shell
    completion, man pages)."""
    parser = argparse.ArgumentParser(
        prog="anysync",
        description="End-to-end encrypted backup and sync with your own anysync-server.",
        epilog=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"anysync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_module = COMMANDS.get(command_in(argv) or "", ("", ""))[0]
    for name, (module, help_line) in COMMANDS.items():
        if name in sub.choices:
            continue  # registered by its module, with an earlier command
        if module == run_module or complete:
            importlib.import_module(f"anysync.cli.{module}").register(sub)
        else:
            sub.add_parser(name, help=help_line)
    _verbose_anywhere(parser)
    return parser


def _verbose_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let -v/--verbose follow the command too (`anysync backup -v ...`), as users of
    restic and borg type it. SUPPRESS: a subcommand that is not given -v must not reset
    the value the top level parsed."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            if "--verbose" not in child._option_string_actions:
                child.add_argument(
                    "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                    help="log more detail to stderr",
                )  # fmt: skip
            _verbose_anywhere(child)
        for choice in action._choices_actions:  # `anysync X --help` starts with its line
            child = action.choices[choice.dest]
            if not child.description and choice.help:
                child.description = choice.help[0].upper() + choice.help[1:] + "."


def _clear_progress() -> None:
    """Blank a progress line before the error is printed. Looked up, not imported: a
    command that drew one has imported the module; `--help` must import nothing more."""
    progress = sys.modules.get("anysync.cli.progress")
    if progress is not None:
        progress.clear_active()


def _quiet_stdout() -> None:
    """The reader of our stdout went away (`anysync ls | head`): point stdout at
    /dev/null so the interpreter's last flush does not report the broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # gRPC's C core logs to stderr on its own ("Handshake failed", ...): the one line a
    # command prints about a failure says it better. Read when grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="anysync: %(levelname)s: %(message)s",
    )
    try:
        code: int = args.run(args)
        return code
    except AnySyncError as exc:
        _clear_progress()
        # A message may quote a name from a snapshot: its control characters as '?'.
        said = "".join(c if c.isprintable() else "?" for c in exc.message)
        print(f"anysync: error: {said}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _clear_progress()
        print("anysync: interrupted", file=sys.stderr)
        return 130
    except EOFError:  # Ctrl-D at a prompt
        print("\nanysync: aborted at the prompt", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # as a command killed by SIGPIPE: `set -o pipefail` still sees it
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
