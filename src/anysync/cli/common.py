"""What the commands share: passwords, prompts, an open repository, output."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from anysync import crypto
from anysync.cli.progress import JsonProgress, Progress, clear_active
from anysync.client import forget
from anysync.client.home import ClientConfig, ClientHome, default_home
from anysync.client.keys import MasterKeys
from anysync.client.remote import Remote
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.errors import UsageError
from anysync.types import MAX_DEVICE_NAME, device_name_problem

if TYPE_CHECKING:
    from anysync.client.repo.commit import Commit
    from anysync.client.repo.history import Snapshot

DEFAULT_PORT = 65065


def server_address(text: str) -> str:
    """HOST:PORT from what a user may type: HOST, HOST:PORT, [IPv6]:PORT, or a URL
    https://HOST[:PORT][/]. The port defaults to 65065. (An argparse type: a bad address
    is a usage error naming the form to use.)"""
    rest = text.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme.lower() not in ("https", "grpcs"):
            raise argparse.ArgumentTypeError(
                f"{text!r}: the server speaks TLS only; give HOST:PORT or https://HOST:PORT"
            )
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest:
            raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, without a path")
    if rest.startswith("["):  # [IPv6] or [IPv6]:PORT
        host, _, port = rest[1:].partition("]")
        host, port = f"[{host}]", port.removeprefix(":")
        ok = bool(host[1:-1]) and (port == "" or rest.endswith("]:" + port))
    elif rest.count(":") > 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: put an IPv6 address in brackets: [ADDRESS]:PORT"
        )
    else:
        host, _, port = rest.partition(":")
        ok = bool(host) and not any(c.isspace() for c in host)
    port = port or str(DEFAULT_PORT)
    if not ok or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a server address; give HOST:PORT, e.g. pi.local:{DEFAULT_PORT}"
        )
    return f"{host}:{int(port)}"


def add_server_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        required=True,
        type=server_address,
        help=f"HOST:PORT of anysync-server (port {DEFAULT_PORT} if left out; "
        "https://HOST:PORT works too)",
    )


def device_name(text: str) -> str:
    """An argparse type: a device name the server will take (types.device_name_problem)."""
    name = text.strip()
    problem = device_name_problem(name)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return name


def add_device_name_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device-name",
        type=device_name,
        help="name of this device, shown in `devices` and `snapshots` (default: host name)",
    )


def add_snapshot_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path",
        action="append",
        default=[],
        dest="filter_paths",  # `ls` has a positional PATH inside the snapshot
        metavar="PATH",
        help="only snapshots that backed up PATH (as given to `backup`); repeatable: all of them",
    )
    p.add_argument("--device", metavar="NAME|ID", help="only snapshots made by this device")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        dest="filter_tags",
        type=tags,
        metavar="TAG[,TAG]",
        help="only snapshots with these tags (all of them); repeatable",
    )


MAX_TAG = 64


def tags(text: str) -> tuple[str, ...]:
    """An argparse type: TAG or TAG,TAG,... (each 1-64 printable characters)."""
    found = tuple(t.strip() for t in text.split(","))
    for t in found:
        if not (0 < len(t) <= MAX_TAG and t.isprintable()):
            raise argparse.ArgumentTypeError(
                f"a tag has 1-{MAX_TAG} printable characters and no comma, not {t[:80]!r}"
            )
    return found


def snapshot_filter(
    args: argparse.Namespace, s: Session | None = None
) -> Callable[[Commit], bool] | None:
    """What --path, --device and --tag select (history.Match); None when none is given.
    --device is an ID, the name a snapshot was made under, or (asked of the server
    through `s`) a device's name today: `snapshots` shows today's names."""
    wanted = {os.path.abspath(os.path.expanduser(p)) for p in args.filter_paths}
    device: str | None = args.device
    tagged = {t for group in args.filter_tags for t in group}
    renamed: set[int] = set()
    if device is not None and s is not None and not device.isdigit():
        renamed = {d.id for d in s.remote.list_devices() if d.name == device}

    def match(c: Commit) -> bool:
        if not wanted <= set(c.paths) or not tagged <= set(c.tags):
            return False
        return device is None or device in (c.device, str(c.device_id)) or c.device_id in renamed

    return match if wanted or tagged or device is not None else None


def resolve_snapshot(s: Session, args: argparse.Namespace) -> Snapshot:
    """The snapshot `args.snapshot` names (an ID prefix, or 'latest' of those that
    --path/--device/--tag select)."""
    from anysync.client.repo import history  # here: not every command needs it

    return history.resolve(
        s.refs,
        args.snapshot,
        print_warning,
        counting=forget.CountingEdits(s.remote),
        match=snapshot_filter(args, s),
    )


def matching_snapshots(s: Session, args: argparse.Namespace) -> list[Snapshot]:
    """Every snapshot (oldest first) that --path/--device/--tag select."""
    from anysync.client.repo import history  # here: not every command needs it

    snaps = history.snapshots(s.refs, warn=print_warning, counting=forget.CountingEdits(s.remote))
    match = snapshot_filter(args, s)
    return [sn for sn in snaps if match is None or match(sn.commit)]


def print_account(cfg: ClientConfig, as_json: bool, said: str) -> None:
    """What signup and login print: `said` ("signed up", "logged in") or JSON."""
    if as_json:
        print_json(
            {
                "email": cfg.email,
                "server": cfg.server,
                "device_id": cfg.device_id,
                "device_name": cfg.device_name,
                "fingerprint": cfg.fingerprint,
            }
        )
    else:
        print(
            f"{said} as {cfg.email} on {cfg.server}; "
            f"this device is #{cfg.device_id} ({cfg.device_name})"
        )


def add_password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file (first line); "
        "default: $ANYSYNC_PASSWORD or a prompt",
    )


def read_password(
    args: argparse.Namespace,
    *,
    env: str = "ANYSYNC_PASSWORD",
    file_attr: str = "password_file",
    prompt: str = "Password: ",
    confirm: bool = False,
) -> str:
    """From --password-file, then the environment, then the terminal. Never from argv."""
    path: Path | None = getattr(args, file_attr, None)
    if path is not None:
        try:
            return path.read_text("utf-8").splitlines()[0] if path.stat().st_size else ""
        except OSError as exc:
            raise UsageError(f"cannot read the password file {path}: {exc.strerror}") from None
    value = os.environ.get(env)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise UsageError(f"no password given: set {env} or use --{file_attr.replace('_', '-')}")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != first:
        raise UsageError("the passwords do not match")
    return first


def interactive_confirm() -> Callable[[str], bool] | None:
    """A yes/no prompt on the terminal, or None when there is no one to ask."""
    if not sys.stdin.isatty():
        return None

    def ask(question: str) -> bool:
        # The question on stderr, as getpass does: stdout holds the answer (--json).
        clear_active()
        sys.stderr.write(f"{question} [yes/no] ")
        sys.stderr.flush()
        return input().strip().lower() in ("y", "yes")

    return ask


def home() -> ClientHome:
    """The client home, refused with its reason if this user cannot use it."""
    h = ClientHome(default_home())
    h.check()
    return h


def default_device_name() -> str:
    name = "".join(c for c in socket.gethostname() if c.isprintable()).strip()
    return name[:MAX_DEVICE_NAME] or "device"


@dataclass
class Session:
    """An unlocked account: config, keys, server connection, repository, local state."""

    home: ClientHome
    config: ClientConfig
    keys: MasterKeys
    remote: Remote
    repo: Repository
    state: StateDB
    refs: RefBook  # the server's refs, checked against what this device has seen


# Names of environment variables, not secrets.
PASSPHRASE_ENV = "ANYSYNC_DEVICE_PASSPHRASE"  # noqa: S105
NEW_PASSPHRASE_ENV = "ANYSYNC_NEW_DEVICE_PASSPHRASE"  # noqa: S105
# What a long-lived child must not keep in its environment.
SECRET_ENV = ("ANYSYNC_PASSWORD", PASSPHRASE_ENV, NEW_PASSPHRASE_ENV)


def read_passphrase(
    prompt: str = "Device passphrase: ", *, env: str = PASSPHRASE_ENV, confirm: bool = False
) -> str:
    """The device passphrase (`anysync keys protect passphrase`): from the environment,
    then the terminal. Never from argv."""
    value = os.environ.get(env)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise UsageError(
            f"this device's keys are protected by a passphrase: set {env} or run "
            "the command at a terminal"
        )
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != first:
        raise UsageError("the passphrases do not match")
    return first


@contextlib.contextmanager
def open_session(args: argparse.Namespace, passphrase: str | None = None) -> Iterator[Session]:
    """The account opened from this device's keys (no password, no scrypt).

    `passphrase`: the device passphrase when the caller has it already (a background
    child that its parent handed it to); else it is asked only if the keys need it."""
    h = home()
    cfg = h.config()
    remote = h.remote()
    try:
        keys = h.unlock(
            remote,
            passphrase=(lambda: passphrase) if passphrase else read_passphrase,
            password=lambda: read_password(args),
        )
    except BaseException:
        remote.close()
        raise
    repo = Repository(remote, keys)
    state = StateDB(h.state_path)
    interrupted = False
    try:
        yield Session(h, cfg, keys, remote, repo, state, RefBook(remote, repo, state))
    except KeyboardInterrupt:
        # Ctrl-C: end the transfers in flight instead of waiting for them (an upload
        # blocked on a silent network would hold the exit for minutes). Packs are stored
        # before the commit and the commit before the ref, so this leaves nothing half-made.
        interrupted = True
        remote.abort()
        raise
    finally:
        repo.close(abort=interrupted)
        state.close()
        remote.close()


def secret_for_child(args: argparse.Namespace) -> str:
    """What a background child needs to open this device's keys: the device passphrase,
    or "" when the keys need none. The keys are opened here, where the user can still
    be asked (and a home without device.keys gets one), so the child never prompts."""
    h = home()
    asked: list[str] = []

    def ask() -> str:
        asked.append(read_passphrase())
        return asked[-1]

    remote = h.remote()
    try:
        h.unlock(remote, passphrase=ask, password=lambda: read_password(args))
    finally:
        remote.close()
    return asked[-1] if asked else ""


def progress(verb: str) -> Progress:
    """The progress of a long command: a line on a terminal, or with
    ANYSYNC_PROGRESS=json a JSON object per line on stderr (for scripts and front ends)."""
    if os.environ.get("ANYSYNC_PROGRESS") == "json":
        return JsonProgress(verb)
    return Progress(verb)


def print_warning(message: str) -> None:
    """What a command tells the user besides its answer (a skipped old snapshot, say)."""
    clear_active()
    print(f"warning: {shown(message)}", file=sys.stderr)  # it may quote names from the server


def print_json(doc: object) -> None:
    """`doc` as UTF-8 JSON on stdout. A name that is not UTF-8 (held by os.fsdecode as
    surrogates) is written as the JSON escape of its surrogate (`\\udcff`): valid UTF-8
    and valid JSON whatever the locale, and Python's json.loads + os.fsencode give the
    original bytes back."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.buffer.flush()


def shown(text: str) -> str:
    """`text` safe for a terminal: a control character (an escape sequence in a file or
    device name from the server) is printed as '?', never obeyed."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    rows = [[shown(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def ensure_manage(s: Session, what: str) -> None:
    """Go on only with the manage right: the device has it, or (a write device at a
    terminal) the password is confirmed and the server grants it for a while (Elevate).
    Else exit 5 with what to do instead."""
    me = s.remote.whoami()
    if forget.has_manage(me.rights, me.elevated_until, time.time()):
        return
    if me.rights == "write" and sys.stdin.isatty():
        password = getpass.getpass(f"{what} deletes data; confirm with the account password: ")
        _, login_secret = crypto.derive_password_keys(password, me.kdf)
        s.remote.elevate(login_secret)
        return
    forget.require_manage(what, me.rights, me.elevated_until, time.time())


def progress_lines(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a long command says what it is doing: stderr, or nowhere under --json."""
    return (lambda _: None) if args.json else (lambda m: print(m, file=sys.stderr))
