"""The RPC layer under hostile use (issue #12, cases 1, 3 and 7), on a real in-process
server (grpc.aio) with small caps: garbage on the wire, idle and cancelled streams,
stalled and concurrent uploads. The real-process versions are tests/integration/
test_hostile*.py."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from anysync import crypto, tls
from anysync.errors import REASON_KEY, StreamIdle, TooManyStreams, UsageError
from anysync.server import app
from anysync.server.app import RunningServer
from anysync.server.home import init_home
from anysync.server.streams import Limits, UploadSlots
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc

Code = grpc.StatusCode
LIMITS = Limits(
    pool_threads=2,
    streams_per_address=6,
    streams_per_account=4,
    streams_total=100,
    max_uploads=1,
    upload_wait_seconds=0.5,
    upload_idle_seconds=0.5,
)


@pytest.fixture(autouse=True)
def _weak_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")


@dataclass
class Served:
    running: RunningServer
    objects: Path
    channel: grpc.Channel
    md: tuple[tuple[str, str], ...]

    @property
    def storage(self) -> pb_grpc.StorageStub:
        return pb_grpc.StorageStub(self.channel)

    def answers_quickly(self) -> None:
        """PreLogin and Whoami are answered within 0.5 s (case 1)."""
        started = time.monotonic()
        accounts, devices = pb_grpc.AccountsStub(self.channel), pb_grpc.DevicesStub(self.channel)
        accounts.PreLogin(pb.PreLoginRequest(email="someone@example.org"), timeout=5)
        devices.Whoami(pb.WhoamiRequest(), metadata=self.md, timeout=5)
        assert time.monotonic() - started < 0.5

    def temp_files(self) -> list[Path]:
        return list((self.objects / ".tmp").iterdir())


def _start(tmp_path: Path, limits: Limits) -> Iterator[Served]:
    home = init_home(tmp_path / "home")
    text = home.config_file.read_text().replace('registration = "invite"', 'registration = "open"')
    home.config_file.write_text(text)
    running = app.start(home, "127.0.0.1:0", limits)
    cert = home.cert_pem()
    channel = grpc.secure_channel(
        f"127.0.0.1:{running.port}",
        grpc.ssl_channel_credentials(root_certificates=cert),
        options=[("grpc.ssl_target_name_override", tls.dns_name_for_verification(cert))],
    )
    try:
        yield Served(running, home.root / "objects", channel, _signup(channel))
    finally:
        channel.close()
        running.stop(grace=None)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _start(tmp_path, LIMITS)


def _signup(channel: grpc.Channel) -> tuple[tuple[str, str], ...]:
    box_secret, box_public = crypto.new_box_keypair()
    reply = pb_grpc.AccountsStub(channel).Signup(
        pb.SignupRequest(
            email="a@example.org",
            user_id=os.urandom(16).hex(),
            kdf=pb.KdfParams(salt=os.urandom(16), log_n=10, r=8, p=1),
            login_secret=os.urandom(32),
            master_keys=b"wrapped keys",
            device_name="laptop",
            device_public_key=box_public,
        )
    )
    token = crypto.open_sealed(box_secret, reply.sealed_token)
    return (("authorization", f"Bearer {token.hex()}"),)


def _reason(err: grpc.RpcError) -> str:
    return dict(err.trailing_metadata() or ()).get(REASON_KEY, "")


def _wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _header(size: int, data: bytes = b"") -> pb.UploadPackRequest:
    sha = hashlib.sha256(data).digest() if data else b"\0" * 32
    return pb.UploadPackRequest(header=pb.PackHeader(size=size, sha256=sha))


# ---------------------------------------------------------------- case 7: garbage


def _methods() -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every method the server serves."""
    out = []
    for service in (*pb.DESCRIPTOR.services_by_name.values(),):
        for m in service.methods:
            out.append((f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming))
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    out += [(f"/grpc.health.v1.Health/{m.name}", False, m.server_streaming) for m in health.methods]
    return out


@pytest.mark.parametrize(("method", "streams_in", "streams_out"), _methods())
def test_garbage_gets_invalid_argument_and_no_error_logged(
    served: Served,
    caplog: pytest.LogCaptureFixture,
    method: str,
    streams_in: bool,
    streams_out: bool,
) -> None:
    # 0x0f is field 1 with wire type 7, which does not exist: never a valid message.
    garbage = b"\x0f" + os.urandom(64)
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.RpcError) as info:
        if streams_in:
            call = served.channel.stream_unary(method)
            call(iter([garbage]), metadata=served.md, timeout=5)
        elif streams_out:
            list(served.channel.unary_stream(method)(garbage, metadata=served.md, timeout=5))
        else:
            served.channel.unary_unary(method)(garbage, metadata=served.md, timeout=5)
    assert info.value.code() == Code.INVALID_ARGUMENT, info.value.details()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    served.answers_quickly()


# ---------------------------------------------------------------- case 1: idle streams


def test_streams_over_the_address_cap_are_refused_and_the_server_still_answers(
    served: Served,
) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(20)]
    outcomes: list[object] = []
    for call in watches:
        try:
            outcomes.append(next(call).status)
        except grpc.RpcError as err:
            outcomes.append((err.code(), _reason(err)))
    served_count = outcomes.count(health_pb2.HealthCheckResponse.SERVING)
    assert served_count == LIMITS.streams_per_address
    refused = [o for o in outcomes if o != health_pb2.HealthCheckResponse.SERVING]
    assert set(refused) == {(Code.RESOURCE_EXHAUSTED, TooManyStreams.reason)}
    served.answers_quickly()

    for call in watches:
        call.cancel()
    gate = served.running.core.gate
    _wait_for(lambda: gate.open_streams == 0)  # cancelled streams give their places back


def test_watch_refs_over_the_account_cap_are_refused_and_cancelled_ones_release(
    served: Served,
) -> None:
    watches = [served.storage.WatchRefs(pb.WatchRefsRequest(), metadata=served.md)]
    watches += [
        served.storage.WatchRefs(pb.WatchRefsRequest(), metadata=served.md) for _ in range(5)
    ]
    notifier = served.running.core.notifier
    _wait_for(lambda: notifier.watchers() == LIMITS.streams_per_account)
    # The refusals travel back on their own: nothing orders them before the last
    # accepted stream subscribes.
    over = len(watches) - LIMITS.streams_per_account
    _wait_for(lambda: sum(w.done() for w in watches) >= over)
    refused = [w for w in watches if w.done()]
    assert len(refused) == over
    assert notifier.watchers() == LIMITS.streams_per_account
    assert {(w.code(), _reason(w)) for w in refused} == {
        (Code.RESOURCE_EXHAUSTED, TooManyStreams.reason)
    }
    served.answers_quickly()
    for w in watches:
        w.cancel()
    _wait_for(lambda: notifier.watchers() == 0 and served.running.core.gate.open_streams == 0)
    # The places are free again: a new stream is accepted.
    again = served.storage.WatchRefs(pb.WatchRefsRequest(), metadata=served.md)
    _wait_for(lambda: notifier.watchers() == 1)
    again.cancel()


def test_a_stalled_upload_is_cut_off_and_leaves_nothing(served: Served) -> None:
    release = threading.Event()

    def header_then_silence() -> Iterator[pb.UploadPackRequest]:
        yield _header(1000)
        yield pb.UploadPackRequest(data=b"x" * 10)
        release.wait(10)

    try:
        with pytest.raises(grpc.RpcError) as info:
            served.storage.UploadPack(header_then_silence(), metadata=served.md, timeout=10)
    finally:
        release.set()
    assert (info.value.code(), _reason(info.value)) == (Code.DEADLINE_EXCEEDED, StreamIdle.reason)
    assert "no upload data for 0.5 s" in info.value.details()
    _wait_for(lambda: served.temp_files() == [])
    served.answers_quickly()


# ---------------------------------------------------------------- case 3: bounded uploads


def test_a_stalled_upload_holds_no_slot(served: Served) -> None:
    """max_uploads = 1: an upload that stalls after its first piece does not keep the
    next one waiting (before, 100 stalled uploads starved every real backup)."""
    data = os.urandom(3000)
    first_sent, release = threading.Event(), threading.Event()

    def stalling() -> Iterator[pb.UploadPackRequest]:
        yield _header(len(data), data)
        yield pb.UploadPackRequest(data=data[:1000])
        first_sent.set()
        release.wait(10)
        yield pb.UploadPackRequest(data=data[1000:])

    # The idle deadline would cut the stalling upload off: give it room here.
    served.running.core.limits = replace(LIMITS, upload_idle_seconds=10)
    stalled = served.storage.UploadPack.future(stalling(), metadata=served.md)
    assert first_sent.wait(5)
    _wait_for(lambda: len(served.temp_files()) == 1)
    other = os.urandom(2000)
    reply = served.storage.UploadPack(
        iter([_header(len(other), other), pb.UploadPackRequest(data=other)]),
        metadata=served.md,
        timeout=10,
    )
    assert reply.stored_bytes == len(other)
    release.set()
    assert stalled.result(timeout=10).stored_bytes == len(data)


def test_a_piece_that_finds_every_slot_taken_waits_then_is_refused() -> None:
    slots = UploadSlots(replace(LIMITS, max_uploads=1, upload_wait_seconds=0.2))

    async def contend() -> None:
        async with slots.slot():
            with pytest.raises(TooManyStreams, match="busy with other uploads"):
                async with slots.slot():
                    pass
        async with slots.slot():  # given back: the next one gets it at once
            pass

    asyncio.run(contend())


def test_an_upload_streams_to_disk_not_memory(served: Served) -> None:
    """Each piece reaches the temporary file before the next one is sent."""
    data = os.urandom(4 << 20)
    piece = 1 << 20
    seen: list[int] = []

    def on_disk() -> int:
        return sum(p.stat().st_size for p in served.temp_files())

    def messages() -> Iterator[pb.UploadPackRequest]:
        yield _header(len(data), data)
        for start in range(0, len(data), piece):
            if start:  # the previous piece is on disk already
                _wait_for(lambda at=start: on_disk() >= at)
                seen.append(on_disk())
            yield pb.UploadPackRequest(data=data[start : start + piece])

    reply = served.storage.UploadPack(messages(), metadata=served.md, timeout=30)
    assert reply.stored_bytes == len(data)
    assert seen == [piece, 2 * piece, 3 * piece]
    assert served.temp_files() == []


def test_blocking_work_runs_in_the_bounded_pool(served: Served) -> None:
    """Many calls at once are all answered, by the fixed number of pool threads."""
    names: set[str] = set()
    db = served.running.core.db
    find = db.find_blobs

    def spy(*args: object) -> object:
        names.add(threading.current_thread().name)
        return find(*args)  # type: ignore[arg-type]

    db.find_blobs = spy  # type: ignore[method-assign]
    request = pb.FindBlobsRequest(blob_ids=[os.urandom(32) for _ in range(100)])
    calls = [served.storage.FindBlobs.future(request, metadata=served.md) for _ in range(30)]
    assert all(c.result(timeout=10).found == [] for c in calls)
    assert len(names) <= LIMITS.pool_threads
    assert all(n.startswith("blocking") for n in names)


# ---------------------------------------------------------------- case 6: the port


def test_a_second_server_cannot_take_the_same_port(served: Served, tmp_path: Path) -> None:
    other = init_home(tmp_path / "other-home")
    with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{served.running.port}"):
        app.start(other, f"127.0.0.1:{served.running.port}", LIMITS)
    served.answers_quickly()
