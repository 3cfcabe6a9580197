"""The gRPC services end to end: a real server on 127.0.0.1 over TLS, a real channel,
the generated stubs. The client side is written out by hand (no anysync client code):
login secrets, KDF parameters and master.keys are just bytes here."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from anysync import crypto, tls
from anysync.errors import REASON_KEY, RateLimited
from anysync.server import app, auth
from anysync.server.app import RunningServer
from anysync.server.home import Home, init_home
from anysync.server.service import SERVICE_NAMES
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc

MiB = 1 << 20
WEAK_LOG_N = 10
Code = grpc.StatusCode


@pytest.fixture(autouse=True)
def _weak_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")


@dataclass
class Server:
    running: RunningServer
    home: Home
    channel: grpc.Channel

    @property
    def accounts(self) -> pb_grpc.AccountsStub:
        return pb_grpc.AccountsStub(self.channel)

    def invite(self) -> str:
        code = auth.new_invite_code()
        self.running.db.add_invite(auth.invite_hash(code), int(time.time()), 2**40)
        return code

    def stored_objects(self) -> list[Path]:
        return [p for p in (self.home.root / "objects").rglob("*") if p.is_file()]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(**settings: str) -> Server:
        """A fresh server; `settings` replace lines of the default server.toml."""
        home = init_home(tmp_path / f"home{len(started)}")
        text = home.config_file.read_text()
        for key, value in settings.items():
            text = "\n".join(
                f"{key} = {value}" if line.startswith(f"{key} =") else line
                for line in text.splitlines()
            )
        home.config_file.write_text(text)
        running = app.start(home, "127.0.0.1:0")
        cert = home.cert_pem()
        channel = grpc.secure_channel(
            f"127.0.0.1:{running.port}",
            grpc.ssl_channel_credentials(root_certificates=cert),
            options=[("grpc.ssl_target_name_override", tls.dns_name_for_verification(cert))],
        )
        server = Server(running, home, channel)
        started.append(server)
        return server

    yield make
    for s in started:
        s.channel.close()
        s.running.stop(grace=None)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server(registration='"open"')


@dataclass
class Client:
    """One logged-in device, as the real client would hold it."""

    server: Server
    email: str
    user_id: str
    login_secret: bytes
    device_id: int
    token: bytes

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token.hex()}"),)

    @property
    def storage(self) -> pb_grpc.StorageStub:
        return pb_grpc.StorageStub(self.server.channel)

    @property
    def devices(self) -> pb_grpc.DevicesStub:
        return pb_grpc.DevicesStub(self.server.channel)

    def upload(self, data: bytes, entries: list[pb.PackEntry], piece: int = MiB) -> bytes:
        header = pb.PackHeader(size=len(data), sha256=hashlib.sha256(data).digest())
        header.entries.extend(entries)
        reply = self.storage.UploadPack(_upload_messages(header, data, piece), metadata=self.md)
        assert reply.stored_bytes == len(data)
        return bytes(reply.pack_id)

    def read(self, pack_id: bytes, offset: int = 0, length: int = 0) -> bytes:
        request = pb.ReadPackRequest(pack_id=pack_id, offset=offset, length=length)
        pieces = [r.data for r in self.storage.ReadPack(request, metadata=self.md)]
        assert all(len(p) <= MiB for p in pieces)
        return b"".join(pieces)

    def store_commit(self, commit_id: bytes) -> bytes:
        """Upload a one-blob pack holding `commit_id`, as the client does before UpdateRef."""
        return self.upload(b"c" * 64, [pb.PackEntry(blob_id=commit_id, offset=0, length=64)])


def _upload_messages(
    header: pb.PackHeader, data: bytes, piece: int
) -> Iterator[pb.UploadPackRequest]:
    yield pb.UploadPackRequest(header=header)
    for i in range(0, len(data), piece):
        yield pb.UploadPackRequest(data=data[i : i + piece])


def _kdf(salt: bytes | None = None, log_n: int = WEAK_LOG_N) -> pb.KdfParams:
    return pb.KdfParams(salt=salt or os.urandom(16), log_n=log_n, r=8, p=1)


def _signup(server: Server, email: str, invite: str = "", **overrides: object) -> Client:
    box_secret, box_public = crypto.new_box_keypair()
    request = pb.SignupRequest(
        email=email,
        invite=invite,
        user_id=os.urandom(16).hex(),
        kdf=_kdf(),
        login_secret=os.urandom(32),
        master_keys=b"wrapped keys",
        device_name="laptop",
        device_public_key=box_public,
    )
    for field, value in overrides.items():
        if field == "kdf":
            request.kdf.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(request, field, value)
    reply = server.accounts.Signup(request)
    token = crypto.open_sealed(box_secret, reply.sealed_token)
    assert reply.user_id == request.user_id
    assert reply.master_keys == b"wrapped keys"
    return Client(server, email, request.user_id, request.login_secret, reply.device_id, token)


def _login(server: Server, email: str, secret: bytes) -> tuple[pb.LoginResponse, bytes]:
    box_secret, box_public = crypto.new_box_keypair()
    reply = server.accounts.Login(
        pb.LoginRequest(
            email=email, login_secret=secret, device_name="phone", device_public_key=box_public
        )
    )
    return reply, crypto.open_sealed(box_secret, reply.sealed_token)


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    return err.code(), err.details()


def _wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _blob(n: int) -> bytes:
    return n.to_bytes(32, "big")


# ---------------------------------------------------------------- health


def test_health_reports_serving(server: Server) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    for name in ("", *SERVICE_NAMES):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert "anysync.v1.Storage" in SERVICE_NAMES


# ---------------------------------------------------------------- accounts


def test_signup_with_an_invite(make_server: Callable[..., Server]) -> None:
    server = make_server()  # registration = "invite" by default
    code = server.invite()
    alice = _signup(server, " Alice@Example.ORG ", invite=code.lower())
    me = alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md)
    assert (me.email, me.user_id, me.device_id) == (
        "alice@example.org",
        alice.user_id,
        alice.device_id,
    )
    # One-time: the same code does not create a second account.
    assert _code(lambda: _signup(server, "bob@example.org", invite=code)) == (
        Code.PERMISSION_DENIED,
        "invalid or used invite code",
    )


def test_bad_or_missing_invite(make_server: Callable[..., Server]) -> None:
    server = make_server()
    code, message = _code(lambda: _signup(server, "a@example.org", invite="AAAAAAAAAAAAAAAAAAAA"))
    assert (code, message) == (Code.PERMISSION_DENIED, "invalid or used invite code")
    code, _ = _code(lambda: _signup(server, "a@example.org"))
    assert code == Code.PERMISSION_DENIED


def test_closed_registration(make_server: Callable[..., Server]) -> None:
    server = make_server(registration='"closed"')
    assert _code(lambda: _signup(server, "a@example.org", invite=server.invite())) == (
        Code.PERMISSION_DENIED,
        "registration is closed on this server",
    )


def test_signup_validation(server: Server) -> None:
    _signup(server, "a@example.org")
    assert _code(lambda: _signup(server, "A@example.org"))[0] == Code.ALREADY_EXISTS
    for bad in (
        {"kdf": _kdf(log_n=WEAK_LOG_N - 1)},  # weaker than the floor
        {"kdf": _kdf(salt=b"short")},
        {"email": "not an address"},
        {"user_id": "XYZ"},
        {"login_secret": b"short"},
        {"master_keys": b"x" * 5000},
        {"device_name": "x" * 101},
        {"device_public_key": b"short"},
    ):
        fields = dict(bad)
        email = str(fields.pop("email", "b@example.org"))
        code, _ = _code(lambda: _signup(server, email, **fields))  # noqa: B023 (called at once)
        assert code == Code.INVALID_ARGUMENT, bad


def test_prelogin_does_not_reveal_accounts(server: Server) -> None:
    salt = os.urandom(16)
    _signup(server, "a@example.org", kdf=_kdf(salt=salt, log_n=12))
    real = server.accounts.PreLogin(pb.PreLoginRequest(email="A@example.org")).kdf
    assert (real.salt, real.log_n, real.r, real.p) == (salt, 12, 8, 1)
    fake = server.accounts.PreLogin(pb.PreLoginRequest(email="nobody@example.org")).kdf
    again = server.accounts.PreLogin(pb.PreLoginRequest(email="nobody@example.org")).kdf
    other = server.accounts.PreLogin(pb.PreLoginRequest(email="else@example.org")).kdf
    assert fake == again  # deterministic
    assert fake.salt != other.salt
    assert (len(fake.salt), fake.log_n, fake.r, fake.p) == (16, WEAK_LOG_N, 8, 1)


def test_login(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    reply, token = _login(server, "a@example.org", alice.login_secret)
    assert reply.device_id != alice.device_id
    assert (reply.user_id, reply.master_keys) == (alice.user_id, b"wrapped keys")
    phone = Client(server, alice.email, alice.user_id, alice.login_secret, reply.device_id, token)
    devices = phone.devices.ListDevices(pb.ListDevicesRequest(), metadata=phone.md).devices
    assert [(d.id, d.current) for d in devices] == [
        (alice.device_id, False),
        (reply.device_id, True),
    ]


def test_wrong_secret_and_unknown_email_look_the_same(server: Server) -> None:
    _signup(server, "a@example.org")
    wrong = _code(lambda: _login(server, "a@example.org", os.urandom(32)))
    unknown = _code(lambda: _login(server, "nobody@example.org", os.urandom(32)))
    assert wrong == unknown == (Code.UNAUTHENTICATED, "wrong e-mail or password")


def test_failed_logins_are_rate_limited(make_server: Callable[..., Server]) -> None:
    """After a few failures from one address, even the right password is refused there
    for a while (the exact counts belong to the limiter: tests/unit/test_limiter.py)."""
    server = make_server(registration='"open"', max_failed_logins="3")
    alice = _signup(server, "a@example.org")
    failures = 0
    while (code := _code(lambda: _login(server, "a@example.org", os.urandom(32)))[0]) == (
        Code.UNAUTHENTICATED
    ):
        failures += 1
        assert failures <= 10, "never limited"
    assert code == Code.RESOURCE_EXHAUSTED and failures >= 3
    with pytest.raises(grpc.RpcError) as info:
        _login(server, "a@example.org", alice.login_secret)
    assert info.value.code() == Code.RESOURCE_EXHAUSTED
    assert dict(info.value.trailing_metadata())[REASON_KEY] == RateLimited.reason
    assert re.fullmatch(r"too many failed log-?ins.*; try again in \d+ s", info.value.details())


def test_disabled_account(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    server.running.db.set_disabled("a@example.org", True)
    assert _code(lambda: alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md)) == (
        Code.UNAUTHENTICATED,
        "account disabled",
    )
    assert _code(lambda: _login(server, "a@example.org", alice.login_secret)) == (
        Code.PERMISSION_DENIED,
        "account disabled",
    )


def test_change_password(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    new_secret, new_salt = os.urandom(32), os.urandom(16)

    def change(old: bytes) -> object:
        return server.accounts.ChangePassword(
            pb.ChangePasswordRequest(
                old_login_secret=old,
                new_login_secret=new_secret,
                new_kdf=_kdf(salt=new_salt),
                new_master_keys=b"rewrapped",
            ),
            metadata=alice.md,
        )

    assert _code(lambda: change(os.urandom(32)))[0] == Code.UNAUTHENTICATED
    change(alice.login_secret)
    assert _code(lambda: _login(server, "a@example.org", alice.login_secret))[0] == (
        Code.UNAUTHENTICATED
    )
    reply, _ = _login(server, "a@example.org", new_secret)
    assert (reply.master_keys, reply.kdf.salt) == (b"rewrapped", new_salt)


# ---------------------------------------------------------------- authentication


def test_missing_or_unknown_token(server: Server) -> None:
    storage = pb_grpc.StorageStub(server.channel)
    request = pb.ListRefsRequest()
    for md in (
        (),
        (("authorization", "Bearer nothex"),),
        (("authorization", "Bearer " + "ab" * 32),),
    ):
        assert (
            _code(lambda md=md: storage.ListRefs(request, metadata=md))[0] == Code.UNAUTHENTICATED
        )


def test_revoked_token_is_refused_on_every_storage_call(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    pack = alice.store_commit(_blob(1))
    alice.devices.RevokeDevice(pb.RevokeDeviceRequest(device_id=alice.device_id), metadata=alice.md)
    header = pb.PackHeader(size=1, sha256=hashlib.sha256(b"x").digest())
    calls: list[Callable[[], object]] = [
        lambda: alice.storage.FindBlobs(
            pb.FindBlobsRequest(blob_ids=[_blob(1)]), metadata=alice.md
        ),
        lambda: alice.storage.UploadPack(_upload_messages(header, b"x", MiB), metadata=alice.md),
        lambda: alice.read(pack),
        lambda: alice.storage.ListRefs(pb.ListRefsRequest(), metadata=alice.md),
        lambda: alice.storage.GetRef(pb.GetRefRequest(name="r"), metadata=alice.md),
        lambda: alice.storage.UpdateRef(
            pb.UpdateRefRequest(name="r", commit_id=_blob(1)), metadata=alice.md
        ),
        lambda: alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md),
    ]
    for call in calls:
        assert _code(call) == (
            Code.UNAUTHENTICATED,
            "this device's access was revoked; log in again",
        )
    # Logging in again gives a new, working device.
    reply, token = _login(server, "a@example.org", alice.login_secret)
    phone = Client(server, alice.email, alice.user_id, alice.login_secret, reply.device_id, token)
    devices = phone.devices.ListDevices(pb.ListDevicesRequest(), metadata=phone.md).devices
    assert [(d.revoked, d.current) for d in devices] == [(True, False), (False, True)]


def test_devices_of_other_accounts_cannot_be_revoked(server: Server) -> None:
    alice, bob = _signup(server, "a@example.org"), _signup(server, "b@example.org")
    request = pb.RevokeDeviceRequest(device_id=alice.device_id)
    assert _code(lambda: bob.devices.RevokeDevice(request, metadata=bob.md))[0] == Code.NOT_FOUND
    alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md)


# ---------------------------------------------------------------- packs


def test_upload_and_read_ranges(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    data = os.urandom(3 * MiB + 1234)
    entries = [
        pb.PackEntry(blob_id=_blob(1), offset=0, length=1000),
        pb.PackEntry(blob_id=_blob(2), offset=1000, length=3 * MiB),
    ]
    pack = alice.upload(data, entries, piece=700_000)
    assert len(pack) == 16
    assert alice.read(pack) == data
    assert alice.read(pack, 1000, 3 * MiB) == data[1000 : 1000 + 3 * MiB]
    assert alice.read(pack, 3 * MiB) == data[3 * MiB :]
    assert _code(lambda: alice.read(pack, len(data) - 10, 11))[0] == Code.OUT_OF_RANGE
    assert _code(lambda: alice.read(pack, len(data) + 1))[0] == Code.OUT_OF_RANGE
    assert _code(lambda: alice.read(b"x" * 16))[0] == Code.NOT_FOUND
    me = alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md)
    assert (me.used_bytes, me.quota_bytes) == (len(data), 0)


def test_find_blobs(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    entries = [pb.PackEntry(blob_id=_blob(i), offset=10 * i, length=10) for i in range(5)]
    pack = alice.upload(os.urandom(50), entries)
    asked = [_blob(i) for i in range(3, 9)]
    found = alice.storage.FindBlobs(pb.FindBlobsRequest(blob_ids=asked), metadata=alice.md).found
    assert sorted((f.blob_id, f.pack_id, f.offset, f.length) for f in found) == [
        (_blob(3), pack, 30, 10),
        (_blob(4), pack, 40, 10),
    ]
    too_many = pb.FindBlobsRequest(blob_ids=[_blob(i) for i in range(10_001)])
    assert _code(lambda: alice.storage.FindBlobs(too_many, metadata=alice.md))[0] == (
        Code.INVALID_ARGUMENT
    )
    bad = pb.FindBlobsRequest(blob_ids=[b"short"])
    assert (
        _code(lambda: alice.storage.FindBlobs(bad, metadata=alice.md))[0] == Code.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    ("sent", "header_size", "sha_of", "entry", "message"),
    [
        (b"a" * 100, 100, b"b" * 100, (0, 10), "SHA-256 does not match"),
        (b"a" * 100, 90, b"a" * 90, (0, 10), "longer than"),
        (b"a" * 100, 110, b"a" * 110, (0, 10), "ended after 100 of 110"),
        (b"a" * 100, 100, b"a" * 100, (95, 10), "does not lie inside"),
        (b"a" * 100, 100, b"a" * 100, (10, 0), "does not lie inside"),
        (b"", 0, b"", (0, 0), "pack size must be"),
    ],
    ids=["bad-sha256", "too-long", "too-short", "entry-outside", "empty-entry", "empty-pack"],
)
def test_bad_uploads_store_and_record_nothing(
    server: Server,
    sent: bytes,
    header_size: int,
    sha_of: bytes,
    entry: tuple[int, int],
    message: str,
) -> None:
    alice = _signup(server, "a@example.org")
    header = pb.PackHeader(size=header_size, sha256=hashlib.sha256(sha_of).digest())
    header.entries.add(blob_id=_blob(1), offset=entry[0], length=entry[1])
    code, details = _code(
        lambda: alice.storage.UploadPack(_upload_messages(header, sent, 30), metadata=alice.md)
    )
    assert code == Code.INVALID_ARGUMENT
    assert message in details
    assert server.stored_objects() == []
    find = pb.FindBlobsRequest(blob_ids=[_blob(1)])
    assert not alice.storage.FindBlobs(find, metadata=alice.md).found
    assert alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md).used_bytes == 0


def test_upload_must_start_with_a_header(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    messages = iter([pb.UploadPackRequest(data=b"x")])
    assert _code(lambda: alice.storage.UploadPack(messages, metadata=alice.md))[0] == (
        Code.INVALID_ARGUMENT
    )


def test_quota(make_server: Callable[..., Server]) -> None:
    server = make_server(registration='"open"', default_quota='"1K"')
    alice = _signup(server, "a@example.org")
    alice.upload(os.urandom(600), [])
    code, message = _code(lambda: alice.upload(os.urandom(600), []))
    assert code == Code.RESOURCE_EXHAUSTED
    assert message.startswith("quota exceeded: 600 B of 1.0 KiB used")
    assert len(server.stored_objects()) == 1
    server.running.db.set_quota("a@example.org", 0)  # unlimited for this account
    alice.upload(os.urandom(600), [])


def test_quota_is_checked_on_the_header_before_any_data(
    make_server: Callable[..., Server],
) -> None:
    """The header's declared size alone is refused: the server does not wait for (or
    store) the data to find out afterwards that it does not fit."""
    server = make_server(registration='"open"', default_quota='"1K"')
    alice = _signup(server, "a@example.org")
    data = os.urandom(2000)
    header = pb.PackHeader(size=len(data), sha256=hashlib.sha256(data).digest())
    header.entries.add(blob_id=_blob(1), offset=0, length=len(data))
    finished = threading.Event()
    data_sent: list[bool] = []

    def messages() -> Iterator[pb.UploadPackRequest]:
        yield pb.UploadPackRequest(header=header)
        # The data goes only to a server still waiting for it once the call should have
        # been refused; the deadline is a safety net, not a synchronisation.
        if not finished.wait(20):
            data_sent.append(True)
            yield pb.UploadPackRequest(data=data)

    future = alice.storage.UploadPack.future(messages(), metadata=alice.md)
    future.add_done_callback(lambda _: finished.set())
    err = future.exception()
    assert isinstance(err, grpc.RpcError)
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert err.details().startswith("quota exceeded: 0 B of 1.0 KiB used")
    assert data_sent == []
    assert server.stored_objects() == []
    assert alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md).used_bytes == 0


def test_a_client_going_away_mid_upload_leaves_nothing(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    data = os.urandom(4 * MiB)
    header = pb.PackHeader(size=len(data), sha256=hashlib.sha256(data).digest())
    release = threading.Event()

    def messages() -> Iterator[pb.UploadPackRequest]:
        yield pb.UploadPackRequest(header=header)
        yield pb.UploadPackRequest(data=data[:MiB])
        release.wait(10)  # never sends the rest

    future = alice.storage.UploadPack.future(messages(), metadata=alice.md)
    tmp = server.home.root / "objects" / ".tmp"
    _wait_for(lambda: any(tmp.iterdir()))  # the server is writing its temp file
    future.cancel()
    _wait_for(lambda: not any(tmp.iterdir()))
    release.set()
    assert server.stored_objects() == []
    assert alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md).used_bytes == 0


# ---------------------------------------------------------------- refs


def test_update_ref_is_compare_and_swap(server: Server) -> None:
    alice = _signup(server, "a@example.org")
    alice.store_commit(_blob(1))
    alice.store_commit(_blob(2))

    def update(expected: int, commit: bytes) -> pb.Ref:
        request = pb.UpdateRefRequest(name="sync:docs", expected_version=expected, commit_id=commit)
        return alice.storage.UpdateRef(request, metadata=alice.md)

    ref = update(0, _blob(1))
    assert (ref.version, ref.commit_id, ref.updated_by_device) == (1, _blob(1), alice.device_id)
    assert _code(lambda: update(0, _blob(2))) == (
        Code.ABORTED,
        "ref changed concurrently (now at version 1)",
    )
    assert update(1, _blob(2)).version == 2
    assert _code(lambda: update(2, _blob(3)))[0] == Code.NOT_FOUND  # commit not stored
    got = alice.storage.GetRef(pb.GetRefRequest(name="sync:docs"), metadata=alice.md)
    assert (got.version, got.commit_id) == (2, _blob(2))
    listed = alice.storage.ListRefs(pb.ListRefsRequest(prefix="sync:"), metadata=alice.md).refs
    assert [r.name for r in listed] == ["sync:docs"]
    bad = pb.GetRefRequest(name="has space")
    assert _code(lambda: alice.storage.GetRef(bad, metadata=alice.md))[0] == Code.INVALID_ARGUMENT


# ---------------------------------------------------------------- isolation


def test_accounts_are_isolated(server: Server) -> None:
    alice, bob = _signup(server, "a@example.org"), _signup(server, "b@example.org")
    pack = alice.store_commit(_blob(1))
    alice.storage.UpdateRef(pb.UpdateRefRequest(name="home", commit_id=_blob(1)), metadata=alice.md)

    assert _code(lambda: bob.read(pack))[0] == Code.NOT_FOUND
    find = pb.FindBlobsRequest(blob_ids=[_blob(1)])
    assert not bob.storage.FindBlobs(find, metadata=bob.md).found
    assert _code(lambda: bob.storage.GetRef(pb.GetRefRequest(name="home"), metadata=bob.md))[0] == (
        Code.NOT_FOUND
    )
    assert not bob.storage.ListRefs(pb.ListRefsRequest(), metadata=bob.md).refs
    # Bob cannot point a ref at Alice's commit, and his own "home" is his alone.
    request = pb.UpdateRefRequest(name="home", commit_id=_blob(1))
    assert _code(lambda: bob.storage.UpdateRef(request, metadata=bob.md))[0] == Code.NOT_FOUND
    bob.store_commit(_blob(1))  # the same blob ID in Bob's account is Bob's own copy
    assert bob.storage.UpdateRef(request, metadata=bob.md).version == 1
    alices = alice.storage.GetRef(pb.GetRefRequest(name="home"), metadata=alice.md)
    assert alices.version == 1 and alices.updated_by_device == alice.device_id


# ---------------------------------------------------------------- prune (#13)


def _reason(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status code and the anysync-reason of a refused call."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    trailing = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    return err.code(), str(trailing.get(REASON_KEY, ""))


def test_prune_rpcs_end_to_end(make_server: Callable[..., Server]) -> None:
    server = make_server(registration='"open"', grace='"0s"', min_pack_age='"0s"')
    alice = _signup(server, "a@example.org")
    me = alice.devices.Whoami(pb.WhoamiRequest(), metadata=alice.md)
    assert (me.rights, me.gc_generation, me.ref_seq, me.grace_seconds) == ("manage", 0, 0, 0)
    kept = alice.store_commit(_blob(1))
    dead = alice.store_commit(_blob(2))
    alice.storage.UpdateRef(
        pb.UpdateRefRequest(name="r", commit_id=_blob(1), gc_generation=0), metadata=alice.md
    )

    listing = list(
        alice.storage.ListPacks(pb.ListPacksRequest(include_entries=True), metadata=alice.md)
    )
    assert {(m.gc_generation, m.ref_seq) for m in listing} == {(0, 1)}
    listed = {bytes(p.pack_id): p for m in listing for p in m.packs}
    assert set(listed) == {kept, dead}
    assert [bytes(e.blob_id) for e in listed[dead].entries] == [_blob(2)]

    phone_reply, phone_token = _login(server, "a@example.org", alice.login_secret)
    phone = Client(server, alice.email, alice.user_id, b"", phone_reply.device_id, phone_token)
    condemn = pb.CondemnPacksRequest(pack_ids=[dead], expected_generation=0, expected_ref_seq=1)
    assert _reason(lambda: phone.storage.CondemnPacks(condemn, metadata=phone.md)) == (
        Code.PERMISSION_DENIED,
        "needs_manage",
    )
    stale = pb.CondemnPacksRequest(pack_ids=[dead], expected_generation=0, expected_ref_seq=0)
    assert _reason(lambda: alice.storage.CondemnPacks(stale, metadata=alice.md)) == (
        Code.ABORTED,
        "refs_changed",
    )
    done = alice.storage.CondemnPacks(condemn, metadata=alice.md)
    assert (done.gc_generation, done.condemned, done.condemned_bytes) == (1, 1, 256)
    assert len(server.stored_objects()) == 1  # grace 0: deleted before the answer

    found = alice.storage.FindBlobs(
        pb.FindBlobsRequest(blob_ids=[_blob(1), _blob(2)]), metadata=alice.md
    )
    assert ([bytes(f.pack_id) for f in found.found], found.gc_generation) == ([kept], 1)

    def update(**fields: int) -> pb.Ref:
        request = pb.UpdateRefRequest(name="r", expected_version=1, commit_id=_blob(1), **fields)
        return alice.storage.UpdateRef(request, metadata=alice.md)

    assert _reason(update) == (Code.FAILED_PRECONDITION, "client_too_old")
    assert _reason(lambda: update(gc_generation=0)) == (Code.ABORTED, "gc_generation_changed")
    assert update(gc_generation=1).version == 2
    refs = alice.storage.ListRefs(pb.ListRefsRequest(), metadata=alice.md)
    assert refs.ref_seq == 2
    history = alice.storage.ListRefHistory(pb.ListRefHistoryRequest(), metadata=alice.md)
    assert [(v.version, v.seq, v.by_manage) for v in history.versions] == [
        (1, 1, True),
        (2, 2, True),
    ]

    devices = alice.devices.ListDevices(pb.ListDevicesRequest(), metadata=alice.md).devices
    assert {d.id: d.rights for d in devices} == {
        alice.device_id: "manage",
        phone.device_id: "write",
    }
    raise_phone = pb.SetDeviceRightsRequest(device_id=phone.device_id, rights="manage")
    assert _reason(lambda: phone.devices.SetDeviceRights(raise_phone, metadata=phone.md)) == (
        Code.PERMISSION_DENIED,
        "needs_manage",
    )
    elevated = phone.devices.Elevate(
        pb.ElevateRequest(login_secret=alice.login_secret), metadata=phone.md
    )
    assert elevated.elevated_until > time.time()
    phone.devices.SetDeviceRights(raise_phone, metadata=phone.md)
    lower = pb.SetDeviceRightsRequest(device_id=phone.device_id, rights="append")
    alice.devices.SetDeviceRights(lower, metadata=alice.md)
    assert _reason(
        lambda: phone.devices.Elevate(
            pb.ElevateRequest(login_secret=alice.login_secret), metadata=phone.md
        )
    ) == (Code.PERMISSION_DENIED, "append_only")
    bad = pb.SetDeviceRightsRequest(device_id=phone.device_id, rights="root")
    assert _code(lambda: alice.devices.SetDeviceRights(bad, metadata=alice.md))[0] == (
        Code.INVALID_ARGUMENT
    )
    repair = pb.RepairIndexRequest(
        pack_id=kept,
        entries=[pb.PackEntry(blob_id=_blob(1), offset=0, length=32)],
        expected_generation=1,
    )
    repaired = alice.storage.RepairIndex(repair, metadata=alice.md)
    assert (repaired.added, repaired.removed, repaired.gc_generation) == (1, 1, 2)
