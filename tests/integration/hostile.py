"""Hostile clients for the integration tests of issue #12: raw gRPC over TLS to a harness
server, from a loopback address of the test's choosing, with accounts made by raw RPCs.

The CLI client is polite by construction; an attacker is not. Everything here speaks the
wire protocol directly (anysync.v1), so a test can open a thousand streams, stall an
upload after its header, send wrong login secrets or bytes that are no protobuf at all.

Addresses: the server sees the client's source address, and Linux routes all of
127.0.0.0/8 to the loopback device, but a gRPC channel cannot choose its source address.
`Origin` therefore runs a small TCP relay on 127.0.0.1 that connects on to the server
*from* the chosen address (bind before connect): TLS passes through it unchanged, and the
server's peer is that address. Distinct origins are distinct attackers (or the victim).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc

from anysync import crypto, tls
from anysync.errors import REASON_KEY
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc
from tests.integration.harness import Server

# The deadline of a liveness check: "is the call answered at all". An idle server answers
# PreLogin and Whoami in milliseconds; today's wedged server does not answer them for
# 18 s or ever. 2 s is far from both, so the check is no timing assertion: it fails only
# for a server that is not serving (docs/testing.md, "no wall-clock assertion").
LIVENESS_DEADLINE = 2.0
# The safety net of a call that has work to do (an upload, a login's hash).
CALL_DEADLINE = 60.0
PIECE = 1 << 20  # bytes per UploadPack data message, as the real client sends them
MESSAGE_LIMIT = 16 << 20


# ---------------------------------------------------------------- servers


def start_server(home: Path, env: dict[str, str] | None = None, **config: str) -> Server:
    """An initialised, running harness server on the local store, its metrics endpoint
    off (the fixed port would clash between servers and log an ERROR at start).

    `env` is added to the server's environment. `config` sets keys of server.toml:
    registration='"open"' a top-level key, and edit_config's dotted keys for sections."""
    server = Server(home, env=env or {})
    server.admin("init")
    edit_config(server, {"metrics.listen": '""', **config})
    server.start()
    return server


def edit_config(server: Server, settings: dict[str, str]) -> None:
    """Set keys of server.toml (see start_server). A key the file lacks is added to its
    section, so the server's strict parser judges it."""
    path = server.home / "server.toml"
    lines = path.read_text().splitlines()
    for dotted, value in settings.items():
        section, _, key = dotted.rpartition(".")
        if not section:
            start = 0
        elif f"[{section}]" in lines:
            start = lines.index(f"[{section}]") + 1
        else:
            lines += ["", f"[{section}]"]
            start = len(lines)
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        for i in range(start, end):
            if lines[i].partition("=")[0].strip() == key:
                lines[i] = f"{key} = {value}"
                break
        else:
            lines.insert(end, f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")


def log_since(server: Server, offset: int) -> str:
    """The server log written after `offset` bytes (take the offset with log_size)."""
    assert server.log is not None
    return server.log.read_bytes()[offset:].decode(errors="replace")


def log_size(server: Server) -> int:
    assert server.log is not None
    return server.log.stat().st_size


def memory_kib(pid: int, field_name: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")


# ---------------------------------------------------------------- origins and channels


class Origin:
    """Clients connecting from one loopback address (see the module docstring)."""

    def __init__(self, server: Server, ip: str = "127.0.0.1") -> None:
        self.server = server
        self.ip = ip
        self._cert = (server.home / "tls" / "server.crt").read_bytes()
        self._channels: list[grpc.Channel] = []
        self._relay: _Relay | None = None
        if ip != "127.0.0.1":
            self._relay = _Relay(("127.0.0.1", server.port), ip)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._relay.port if self._relay else self.server.port}"

    def channel(self) -> grpc.Channel:
        """A new channel on a TCP connection of its own (no subchannel sharing)."""
        ch = grpc.secure_channel(
            self.target,
            grpc.ssl_channel_credentials(root_certificates=self._cert),
            options=[
                ("grpc.ssl_target_name_override", tls.dns_name_for_verification(self._cert)),
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ],
        )
        self._channels.append(ch)
        return ch

    def wire(self) -> Wire:
        return Wire(self.channel())

    def close_channels(self) -> None:
        """Close every channel of this origin: their calls are cancelled at once."""
        channels, self._channels = self._channels, []
        for ch in channels:
            ch.close()

    def close(self) -> None:
        self.close_channels()
        if self._relay is not None:
            self._relay.close()


@contextlib.contextmanager
def origin(server: Server, ip: str = "127.0.0.1") -> Iterator[Origin]:
    o = Origin(server, ip)
    try:
        yield o
    finally:
        o.close()


class _Relay:
    """TCP relay 127.0.0.1:port → target, connecting from `source_ip`."""

    def __init__(self, target: tuple[str, int], source_ip: str) -> None:
        self._target = target
        self._source = source_ip
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, source_address=(self._source, 0))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=_pump, args=(src, dst), name="relay-pump", daemon=True
                ).start()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)


@dataclass
class Wire:
    """The stubs of one channel."""

    channel: grpc.Channel
    accounts: pb_grpc.AccountsStub = field(init=False)
    devices: pb_grpc.DevicesStub = field(init=False)
    storage: pb_grpc.StorageStub = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = pb_grpc.AccountsStub(self.channel)
        self.devices = pb_grpc.DevicesStub(self.channel)
        self.storage = pb_grpc.StorageStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


# ---------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    email: str
    login_secret: bytes  # what the client derives from the password; random here
    user_id: str
    token: bytes

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token.hex()}"),)


def kdf_params() -> pb.KdfParams:
    return pb.KdfParams(
        salt=os.urandom(crypto.SALT_SIZE),
        log_n=crypto.kdf_floor_log_n(),
        r=crypto.KDF_R,
        p=crypto.KDF_P,
    )


def signup(wire: Wire, email: str, invite: str = "") -> Account:
    """A new account through the raw Signup RPC; `invite` from Server.invite(), or ""
    when the server's registration is open. Its login secret is random: Login with it
    is a correct login."""
    secret_key, public_key = crypto.new_box_keypair()
    login_secret = os.urandom(32)
    user_id = secrets.token_hex(16)
    resp = wire.accounts.Signup(
        pb.SignupRequest(
            email=email,
            invite=invite,
            user_id=user_id,
            kdf=kdf_params(),
            login_secret=login_secret,
            master_keys=os.urandom(200),  # ciphertext to the server: any bytes do
            device_name="hostile test",
            device_public_key=public_key,
        ),
        timeout=CALL_DEADLINE,
    )
    token = crypto.open_sealed(secret_key, resp.sealed_token)
    return Account(email, login_secret, user_id, token)


def login_request(email: str, login_secret: bytes) -> pb.LoginRequest:
    return pb.LoginRequest(
        email=email,
        login_secret=login_secret,
        device_name="hostile test",
        device_public_key=crypto.new_box_keypair()[1],
    )


def reason(err: grpc.RpcError) -> str:
    """The anysync-reason a failed call carried in its trailing metadata ("" = none)."""
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    return next((str(v) for k, v in trailing or () if k == REASON_KEY), "")


def describe(err: grpc.RpcError) -> str:
    return f"{err.code().name}: {err.details()} (reason {reason(err)!r})"


def assert_serving(wire: Wire, account: Account, context: str, prelogin: bool = True) -> None:
    """PreLogin and Whoami are answered (LIVENESS_DEADLINE: answered at all, see there).
    `prelogin=False` leaves PreLogin out, for checks repeated more often than its rate
    limit allows one address."""
    if prelogin:
        try:
            wire.accounts.PreLogin(
                pb.PreLoginRequest(email="someone@example.org"), timeout=LIVENESS_DEADLINE
            )
        except grpc.RpcError as err:
            raise AssertionError(f"PreLogin not answered {context}: {describe(err)}") from None
    try:
        who = wire.devices.Whoami(
            pb.WhoamiRequest(), metadata=account.metadata, timeout=LIVENESS_DEADLINE
        )
    except grpc.RpcError as err:
        raise AssertionError(f"Whoami not answered {context}: {describe(err)}") from None
    assert who.email == account.email


# ---------------------------------------------------------------- packs and refs


def pack_header(
    data_size: int, sha256: bytes, entries: Sequence[tuple[bytes, int, int]]
) -> pb.PackHeader:
    return pb.PackHeader(
        size=data_size,
        sha256=sha256,
        entries=[pb.PackEntry(blob_id=b, offset=o, length=n) for b, o, n in entries],
    )


def upload_messages(
    size: int, entries: Sequence[tuple[bytes, int, int]] = (), piece: bytes | None = None
) -> Iterator[pb.UploadPackRequest]:
    """An UploadPack stream of `size` bytes: `piece` (1 MiB of random bytes unless
    given) repeated and cut to size, so a 64 MiB pack costs the test 1 MiB of memory.
    The server cannot tell: a pack is ciphertext to it, checked only by its SHA-256
    and its entries lying inside it."""
    piece = piece if piece is not None else os.urandom(PIECE)
    digest = hashlib.sha256()
    for start in range(0, size, len(piece)):
        digest.update(piece[: min(len(piece), size - start)])
    yield pb.UploadPackRequest(header=pack_header(size, digest.digest(), entries))
    for start in range(0, size, len(piece)):
        yield pb.UploadPackRequest(data=piece[: min(len(piece), size - start)])


def upload(
    wire: Wire,
    account: Account,
    size: int,
    entries: Sequence[tuple[bytes, int, int]] = (),
    piece: bytes | None = None,
) -> pb.UploadPackResponse:
    """Store a pack of `size` bytes (see upload_messages); the server's answer."""
    resp: pb.UploadPackResponse = wire.storage.UploadPack(
        upload_messages(size, entries, piece), metadata=account.metadata, timeout=CALL_DEADLINE
    )
    return resp


def blob_id() -> bytes:
    return os.urandom(32)


def stored_commit(wire: Wire, account: Account) -> bytes:
    """A blob the account holds, for refs to point at (UpdateRef checks that)."""
    commit = blob_id()
    upload(wire, account, 64, [(commit, 0, 64)])
    return commit


def update_ref(wire: Wire, account: Account, name: str, version: int, commit: bytes) -> pb.Ref:
    ref: pb.Ref = wire.storage.UpdateRef(
        pb.UpdateRefRequest(name=name, expected_version=version, commit_id=commit),
        metadata=account.metadata,
        timeout=CALL_DEADLINE,
    )
    return ref
