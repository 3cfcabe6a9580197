"""`anysync-server`: initialise a home, run the server, administer accounts.

Admin commands open the same SQLite database as a running server; WAL and the
busy timeout make that safe. `scrub` also lists the object store and runs the reaper,
as the server does: both only ever finish deletions that are due, whoever comes first.
Nothing here prints a secret, except `invite create`, whose whole purpose is to print one
invite code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from anysync import __version__
from anysync.errors import AnySyncError, UsageError
from anysync.server import app, auth, logs, scrub
from anysync.server.config import format_size, parse_duration, parse_listen, parse_size
from anysync.server.gc import Reaper
from anysync.server.home import ENV_HOME, Home, fingerprint, init_home, resolve_home
from anysync.server.metadata import Metadata
from anysync.store import open_store

PROG = "anysync-server"
EXIT_CODES = "exit codes: 0 success, 1 failure, 2 usage error"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Admin commands print their results on standard output: their logs go to stderr.
    # `run` switches to the [log] settings (standard output) once it has read them.
    logging.basicConfig(
        level=logging.INFO if args.func is cmd_run else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    home = resolve_home(getattr(args, "home", None))
    try:
        return int(args.func(home, args) or 0)
    except UsageError as err:
        return _fail(str(err), 2)
    except AnySyncError as err:
        return _fail(str(err), 1)
    except (OSError, RuntimeError) as err:
        return _fail(str(err), 1)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------- commands


def cmd_init(home: Home, args: argparse.Namespace) -> int:
    init_home(home.root)
    print(f"initialised new server home at {home.root}")
    print(f"TLS certificate fingerprint (SHA-256): {fingerprint(home.cert_pem())}")
    return 0


def cmd_run(home: Home, args: argparse.Namespace) -> int:
    if args.listen:
        parse_listen(args.listen)
    gc = app.GcOverrides(
        grace_seconds=_duration_arg(args.gc_grace, "--gc-grace"),
        min_pack_age_seconds=_duration_arg(args.gc_min_pack_age, "--gc-min-pack-age"),
    )
    _refuse_appliance_home(home)
    pending = home.root / WELCOME_PENDING
    if not home.is_initialised():
        init_home(home.root)
        pending.touch(mode=0o600)  # until the welcome is shown, even if this start fails
        print(f"initialised new server home at {home.root}", flush=True)
    with home.lock():  # held while serving: a second `run` on this home exits
        config = home.load_config()
        logs.configure(config.log_format, config.log_level)
        welcome = _welcome(home, config.registration) if pending.exists() else None
        app.serve(home, args.listen, gc, welcome)
    return 0


# A new home's owner has not been shown how to connect yet (the first start may fail
# before serving: a port in use). Removed once the welcome is printed.
WELCOME_PENDING = ".welcome-pending"


def _refuse_appliance_home(home: Home) -> None:
    """A home run.sh set up stores its packs in the appliance's object store, which
    supervisord starts beside the server: served alone it would wait for a store that
    never comes. (supervisord sets SUPERVISOR_ENABLED in its programs' environment.)"""
    if (home.root / "supervisor" / "supervisord.conf").exists() and not os.environ.get(
        "SUPERVISOR_ENABLED"
    ):
        raise UsageError(
            f"{home.root} is the appliance's home (run.sh): start it with ./run.sh, which "
            "runs the server with its object store; to serve a home of its own, set "
            "ANYSYNC_SERVER_HOME=DIR (or --home DIR)"
        )


def _first_invite(home: Home) -> str:
    code = auth.new_invite_code()
    now = int(time.time())
    with _db(home) as db:
        db.add_invite(auth.invite_hash(code), now, now + 7 * 86400)
    return code


def _welcome(home: Home, registration: str) -> Callable[[app.RunningServer], None]:
    """What the owner of a new home does next, printed once it serves (as the
    container's first start does): the exact signup line, with a first invite made
    then (a start that fails earlier leaves no unused invite behind)."""

    def show(running: app.RunningServer) -> None:
        (home.root / WELCOME_PENDING).unlink(missing_ok=True)
        if registration == "closed":
            return
        invite = _first_invite(home) if registration == "invite" else None
        host = running.host
        if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 (every address: name this machine)
            host = socket.gethostname()
        signup = f"anysync signup --server {host}:{running.port} --email YOU@EXAMPLE.ORG"
        if invite is not None:
            signup += f" --invite {invite}"
        signup += f" --fingerprint {running.fingerprint}"
        lines = [
            "",
            "Create your account from a device with the anysync client:",
            f"  {signup}",
        ]
        if invite is not None:
            lines.append(
                "(the invite is for one account and valid 7 days; more: "
                f"anysync-server --home {shlex.quote(str(home.root))} invite create)"
            )
        print("\n".join(lines) + "\n", flush=True)

    return show


def _duration_arg(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except UsageError as err:
        raise UsageError(f"{option}: {err}") from None


def cmd_fingerprint(home: Home, args: argparse.Namespace) -> int:
    home.require_initialised()
    print(fingerprint(home.cert_pem()))
    return 0


def cmd_health(home: Home, args: argparse.Namespace) -> int:
    # Imported here: only this command is a gRPC client.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from anysync import tls  # not at the top: `run` must not load cryptography.x509

    home.require_initialised()
    address = args.address or _local_address(home.load_config().listen)
    cert_pem = home.cert_pem()
    credentials = grpc.ssl_channel_credentials(root_certificates=cert_pem)
    options = [("grpc.ssl_target_name_override", tls.dns_name_for_verification(cert_pem))]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout
            )
        except grpc.RpcError as err:
            return _fail(f"{address}: {err.code().name}: {err.details()}", 1)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return _fail(f"{address}: {status}", 1)
    return 0


def cmd_invite_create(home: Home, args: argparse.Namespace) -> int:
    if not 1 <= args.expires_days <= 365:
        raise UsageError("--expires-days must be 1 to 365")
    code = auth.new_invite_code()
    now = int(time.time())
    with _db(home) as db:
        db.add_invite(auth.invite_hash(code), now, now + args.expires_days * 86400)
    print(code)
    return 0


def cmd_invite_list(home: Home, args: argparse.Namespace) -> int:
    now = int(time.time())
    with _db(home) as db:
        invites = db.list_invites()
    print(f"{'ID':<10} {'CREATED':<17} {'EXPIRES':<17} STATUS")
    for inv in invites:
        if inv.used_at is not None:
            status = f"used by {inv.used_by_email} on {_date(inv.used_at)}"
        else:
            status = "expired" if inv.expires_at <= now else "unused"
        # Only a prefix of the code's hash: enough to tell invites apart, useless to sign up.
        ident = inv.code_hash.hex()[:8]
        print(f"{ident:<10} {_date(inv.created_at):<17} {_date(inv.expires_at):<17} {status}")
    return 0


def cmd_user_list(home: Home, args: argparse.Namespace) -> int:
    default_quota = home.load_config().default_quota
    with _db(home) as db:
        users = db.list_users()
    if args.json:
        rows = [
            {
                "email": u.email,
                "user_id": u.user_id,
                "devices": u.devices,
                "used_bytes": u.used_bytes,
                "quota_bytes": u.quota_bytes,  # null = the server's default
                "effective_quota_bytes": _effective(u.quota_bytes, default_quota),
                "disabled": u.disabled,
            }
            for u in users
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'EMAIL':<32} {'USER ID':<32} {'DEVICES':>7} {'USED':>10} {'QUOTA':<20} DISABLED")
    for u in users:
        quota = _quota_text(_effective(u.quota_bytes, default_quota))
        if u.quota_bytes is None:
            quota = f"default ({quota})"
        print(
            f"{u.email:<32} {u.user_id:<32} {u.devices:>7} {format_size(u.used_bytes):>10} "
            f"{quota:<20} {'yes' if u.disabled else 'no'}"
        )
    return 0


def cmd_user_disable(home: Home, args: argparse.Namespace) -> int:
    email = auth.normalize_email(args.email)
    with _db(home) as db:
        db.set_disabled(email, True)
    print(f"disabled {email}; its devices are refused until `{PROG} user enable`")
    return 0


def cmd_user_enable(home: Home, args: argparse.Namespace) -> int:
    email = auth.normalize_email(args.email)
    with _db(home) as db:
        db.set_disabled(email, False)
    print(f"enabled {email}")
    return 0


def cmd_user_quota(home: Home, args: argparse.Namespace) -> int:
    email = auth.normalize_email(args.email)
    word = args.size.strip().lower()
    quota = None if word == "default" else 0 if word in ("none", "unlimited") else parse_size(word)
    with _db(home) as db:
        db.set_quota(email, quota)
    shown = "the server's default" if quota is None else _quota_text(quota)
    print(f"quota of {email}: {shown}")
    return 0


def cmd_scrub(home: Home, args: argparse.Namespace) -> int:
    config = home.load_config()
    orphan_age = _duration_arg(args.orphan_age, "--orphan-age")
    if orphan_age is None:
        orphan_age = config.scrub_orphan_age_seconds
    with _db(home) as db:
        store = open_store(config, home.root)
        secret = home.secret()
        reaper = Reaper(db, store, secret, config.gc_grace_seconds)
        report = scrub.Scrubber(db, store, secret, reaper, orphan_age).run()
    if args.json:
        print(json.dumps(_scrub_json(report), indent=2))
    else:
        _print_scrub(report)
    return 0 if report.clean else 6


def _print_scrub(report: scrub.ScrubReport) -> None:
    print(
        f"{report.objects} objects, {report.packs} packs; {len(report.missing)} missing, "
        f"{len(report.orphans)} orphans ({format_size(report.orphan_bytes)}), "
        f"{report.young_orphans} younger orphans not reported yet; "
        f"{report.reaped} half-deleted packs finished"
    )
    for m in report.missing:
        state = scrub.state_name(m.state)
        print(f"missing: pack {m.pack_id} ({state}) of account {m.user_id}")
    for o in report.orphans:
        owner = f"account {o.user_id}" if o.user_id else "no account"
        print(
            f"orphan: {o.key} ({format_size(o.size)}, {owner}, since {_date(o.first_seen)});"
            " left in place"
        )


def _scrub_json(report: scrub.ScrubReport) -> dict[str, object]:
    return {
        "objects": report.objects,
        "packs": report.packs,
        "reaped": report.reaped,
        "young_orphans": report.young_orphans,
        "missing": [
            {"user_id": m.user_id, "pack_id": m.pack_id.hex(), "state": scrub.state_name(m.state)}
            for m in report.missing
        ],
        "orphans": [
            {"key": o.key, "size": o.size, "first_seen": o.first_seen, "user_id": o.user_id}
            for o in report.orphans
        ],
    }


# ---------------------------------------------------------------- helpers


@contextmanager
def _db(home: Home) -> Iterator[Metadata]:
    """The home's metadata database, open for one admin command."""
    home.require_initialised()
    db = Metadata.open(home.metadata_db)
    try:
        yield db
    finally:
        db.close()


def _effective(quota: int | None, default: int) -> int:
    return default if quota is None else quota


def _quota_text(quota: int) -> str:
    return "unlimited" if quota == 0 else format_size(quota)


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _local_address(listen: str) -> str:
    """Where to reach a server listening on `listen` from this machine."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", ""):  # noqa: S104 (matching, not binding)
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def _parser() -> argparse.ArgumentParser:
    # --home is accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"server home (default: ${ENV_HOME}, else ~/.AnySync)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="AnySync server: end-to-end encrypted backup and sync, self-hosted.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        func: Callable[[Home, argparse.Namespace], int],
        help_text: str,
        epilog: str = EXIT_CODES,
    ) -> argparse.ArgumentParser:
        p = subparsers.add_parser(
            name, parents=[common], help=help_text, description=help_text, epilog=epilog
        )
        p.set_defaults(func=func)
        return p

    add(sub, "init", cmd_init, "create a new server home (keys, certificate, config)")
    p = add(
        sub,
        "run",
        cmd_run,
        "serve (initialising the home first if there is none); stop with SIGTERM or Ctrl-C",
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="override `listen` of server.toml")
    p.add_argument(
        "--gc-grace",
        metavar="DURATION",
        help="override [gc] grace: how long condemned packs wait before deletion (0s = none)",
    )
    p.add_argument(
        "--gc-min-pack-age",
        metavar="DURATION",
        help="override [gc] min_pack_age: younger packs are never condemned",
    )
    add(sub, "fingerprint", cmd_fingerprint, "print the TLS certificate's SHA-256 fingerprint")
    p = add(
        sub,
        "health",
        cmd_health,
        "check that the server answers SERVING over TLS",
        "exit codes: 0 serving, 1 not serving or unreachable, 2 usage error",
    )
    p.add_argument("--address", metavar="HOST:PORT", help="default: from `listen` of server.toml")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    invite = sub.add_parser("invite", parents=[common], help="manage sign-up invites")
    isub = invite.add_subparsers(dest="invite_command", required=True, metavar="COMMAND")
    p = add(isub, "create", cmd_invite_create, "create a one-time invite code and print it")
    p.add_argument("--expires-days", type=int, default=auth.INVITE_DAYS, metavar="N")
    add(isub, "list", cmd_invite_list, "list invites (codes are stored hashed: not shown)")

    user = sub.add_parser("user", parents=[common], help="manage accounts")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    p = add(usub, "list", cmd_user_list, "list accounts with their usage and quota")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add(usub, "disable", cmd_user_disable, "refuse an account's devices and logins")
    p.add_argument("email")
    p = add(usub, "enable", cmd_user_enable, "undo `user disable`")
    p.add_argument("email")
    p = add(usub, "quota", cmd_user_quota, "set an account's quota")
    p.add_argument("email")
    p.add_argument("size", help="e.g. 500M, 10G; `none` = unlimited; `default` = server default")

    p = add(
        sub,
        "scrub",
        cmd_scrub,
        "compare the object store with the recorded packs and report what does not match "
        "(deletes nothing; safe while the server runs)",
        "exit codes: 0 clean, 1 failure, 2 usage error, 6 missing packs or orphans found",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--orphan-age",
        metavar="DURATION",
        help="override [scrub] orphan_age: report objects without a pack known this long",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
