"""Issue #12, case 1: idle streams must not take the server from its other users.

An attacker opens 1,000 streams that do nothing: unauthenticated Health/Watch, WatchRefs
on its own account, or UploadPack streams that send a header and stall. Meanwhile a
legitimate user (another address, another account) must still get PreLogin and Whoami
answered; streams over the server's caps must be refused with RESOURCE_EXHAUSTED and a
reason; and once the attacker cancels, everything is released at once: the same
attacker can open a stream again and be served.

The streams are spread over several channels (one TCP connection each) of at most 100
streams, since an HTTP/2 peer may allow no more than 100 streams per connection and the
client would queue the rest without ever sending them. "From one address": ten
connections from 127.0.0.2. "From many": one connection from each of ten addresses
(127.0.0.10 ..), through hostile.Origin. The legitimate user connects from 127.0.0.1.

Deadlines here are liveness checks, not timing assertions (see hostile.LIVENESS_DEADLINE).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from anysync.errors import QuotaExceeded, RateLimited
from anysync.v1 import anysync_pb2 as pb
from tests.integration.harness import Server
from tests.integration.hostile import (
    LIVENESS_DEADLINE,
    Account,
    Origin,
    Wire,
    assert_serving,
    blob_id,
    describe,
    origin,
    pack_header,
    reason,
    signup,
    start_server,
    stored_commit,
    update_ref,
    upload,
)

STREAMS = 1000
PER_CONNECTION = 100
# How long every channel's stream openings may take to reach the server (safety net).
FENCE_DEADLINE = 15.0
# How long a stream may take to show it is served (its first message) or refused.
SETTLE_DEADLINE = 15.0
# How long the server may take to notice that the attacker's connections are closed.
RELEASE_DEADLINE = 5.0
# Reasons that would be wrong for a cap on streams: those name other limits.
OTHER_LIMITS = (QuotaExceeded.reason, RateLimited.reason)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "server-home")
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Users:
    victim: Account
    victim_wire: Wire  # from 127.0.0.1
    attacker: Account
    attacker_commit: bytes  # a blob the attacker's account holds, for its refs


@pytest.fixture
def users(server: Server) -> Iterator[Users]:
    with origin(server) as home:
        wire = home.wire()
        victim = signup(wire, "victim@example.org", server.invite())
        attacker = signup(wire, "attacker@example.org", server.invite())
        yield Users(victim, wire, attacker, stored_commit(wire, attacker))


@dataclass
class Streams:
    """Calls held open by the attacker, over its channels."""

    release: threading.Event  # set at the end: stalled uploads' request threads return
    calls: list[Any] = field(default_factory=list)
    fences: list[Any] = field(default_factory=list)

    def ended(self) -> list[grpc.RpcError]:
        """The calls that have ended (a refused call has). A gRPC call object is also
        its own RpcError: code(), details(), trailing_metadata()."""
        return [c for c in self.calls if c.done()]


Opener = Callable[[Wire, Account, threading.Event], Any]


def open_health_watch(wire: Wire, _attacker: Account, _release: threading.Event) -> Any:
    return wire.health.Watch(health_pb2.HealthCheckRequest(service=""))


def open_watch_refs(wire: Wire, attacker: Account, _release: threading.Event) -> Any:
    return wire.storage.WatchRefs(pb.WatchRefsRequest(), metadata=attacker.metadata)


def open_stalled_upload(wire: Wire, attacker: Account, release: threading.Event) -> Any:
    def header_then_silence() -> Iterator[pb.UploadPackRequest]:
        yield pb.UploadPackRequest(header=pack_header(64 << 20, b"\0" * 32, []))
        release.wait()  # never another byte, until the test is over

    return wire.storage.UploadPack.future(header_then_silence(), metadata=attacker.metadata)


KINDS: dict[str, Opener] = {
    "health-watch": open_health_watch,
    "watch-refs": open_watch_refs,
    "stalled-upload": open_stalled_upload,
}
ORIGINS = {
    "one-address": ["127.0.0.2"],
    "many-addresses": [f"127.0.0.{10 + i}" for i in range(STREAMS // PER_CONNECTION)],
}


def open_streams(
    origins: list[Origin], opener: Opener, attacker: Account, release: threading.Event
) -> Streams:
    """STREAMS calls over channels of PER_CONNECTION calls, spread over the origins;
    then, on every channel, a unary call (a fence) that the server can only answer
    once it has read that connection's stream openings."""
    streams = Streams(release)
    channels = STREAMS // PER_CONNECTION
    for n in range(channels):
        wire = origins[n % len(origins)].wire()
        streams.calls += [opener(wire, attacker, streams.release) for _ in range(PER_CONNECTION)]
        streams.fences.append(
            wire.health.Check.future(health_pb2.HealthCheckRequest(), timeout=FENCE_DEADLINE)
        )
    return streams


def unanswered_fences(streams: Streams) -> list[str]:
    """The fences that got no answer at all (any status but a deadline is an answer)."""
    missing = []
    for fence in streams.fences:
        try:
            fence.result()
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                missing.append(describe(err))
    return missing


def first_messages(calls: list[Any], deadline: float) -> list[object]:
    """For each response stream: its first message, or the error it ended with. Streams
    still silent after `deadline` are cancelled here and come back as CANCELLED."""

    def first(call: Any) -> object:
        try:
            return next_update(call)
        except grpc.RpcError as err:
            return err

    timer = threading.Timer(deadline, lambda: [c.cancel() for c in calls])
    timer.start()
    try:
        with ThreadPoolExecutor(max_workers=100) as pool:
            return list(pool.map(first, calls))
    finally:
        timer.cancel()


def next_update(call: Any) -> object:
    """The next message of a stream, past WatchRefs' heartbeats (an empty Ref, the first
    one sent at once): the test wants proof that updates are delivered."""
    msg = next(call)
    while isinstance(msg, pb.Ref) and not msg.name:
        msg = next(call)
    return msg


@contextlib.contextmanager
def ref_updates(wire: Wire, account: Account, name: str, commit: bytes) -> Iterator[None]:
    """Move a ref of `account` again and again while the block runs: a stream that is
    still waiting to be admitted sees a later update instead of missing the only one."""
    stop = threading.Event()

    def publish() -> None:
        for version in itertools.count():
            update_ref(wire, account, name, version, commit)
            if stop.wait(0.2):
                return

    with ThreadPoolExecutor(max_workers=1) as pool:
        publisher = pool.submit(publish)
        try:
            yield
        finally:
            stop.set()
            publisher.result()


def assert_refused_clearly(errors: list[grpc.RpcError], what: str) -> None:
    wrong = [
        describe(e)
        for e in errors
        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or reason(e) in ("", *OTHER_LIMITS)
    ]
    assert not wrong, (
        f"{len(wrong)} of {STREAMS} {what} ended other than refused with RESOURCE_EXHAUSTED "
        f"and a reason of their own, e.g. {wrong[:3]}"
    )


@pytest.mark.parametrize("where", ORIGINS)
@pytest.mark.parametrize("kind", KINDS)
def test_idle_streams_leave_the_server_answering(
    server: Server, users: Users, kind: str, where: str
) -> None:
    with ExitStack() as stack:
        origins = [stack.enter_context(origin(server, ip)) for ip in ORIGINS[where]]
        release = threading.Event()
        stack.callback(release.set)
        streams = open_streams(origins, KINDS[kind], users.attacker, release)
        missing_fences = unanswered_fences(streams)
        # The legitimate user, from another address, is served while the streams are open.
        assert_serving(users.victim_wire, users.victim, f"with {STREAMS} {kind} streams open")
        assert not missing_fences, (
            f"the server did not read {len(missing_fences)} of the attacker's connections"
        )
        refused = streams.ended()
        assert_refused_clearly(refused, f"{kind} streams")
        if where == "one-address" or kind != "health-watch":
            # 1,000 streams from one address, or on one account, are over any cap.
            assert refused, f"all {STREAMS} {kind} streams from {where} were accepted"
        if kind == "health-watch":
            # The accepted streams are really served: each has its first answer.
            outcomes = first_messages(streams.calls, SETTLE_DEADLINE)
            assert_refused_clearly([o for o in outcomes if isinstance(o, grpc.RpcError)], kind)
        if kind == "watch-refs":
            # ... each accepted WatchRefs stream gets an update of the attacker's refs.
            with ref_updates(users.victim_wire, users.attacker, "r-watched", users.attacker_commit):
                outcomes = first_messages(streams.calls, SETTLE_DEADLINE)
            assert_refused_clearly([o for o in outcomes if isinstance(o, grpc.RpcError)], kind)
            assert all(o.name == "r-watched" for o in outcomes if isinstance(o, pb.Ref))

        # Cancelled, the streams release everything at once: the server answers the
        # victim, and the attacker itself is served again (no cap still counting them).
        for o in origins:
            o.close_channels()
        assert_serving(
            users.victim_wire, users.victim, f"after cancelling {STREAMS} {kind} streams"
        )
        assert_served_again(origins[0], kind, users)


def assert_served_again(attacker_origin: Origin, kind: str, users: Users) -> None:
    """A stream of the same kind from the same address is served soon after the cancel:
    RELEASE_DEADLINE gives the server time to notice the closed connections, nothing
    more (today's WatchRefs handlers hold on for up to a 20 s heartbeat)."""
    wire = attacker_origin.wire()
    attacker = users.attacker
    end = time.monotonic() + RELEASE_DEADLINE
    for attempt in itertools.count():
        try:
            if kind == "health-watch":
                call = wire.health.Watch(health_pb2.HealthCheckRequest(), timeout=LIVENESS_DEADLINE)
                assert next(call).status == health_pb2.HealthCheckResponse.SERVING
                call.cancel()
            elif kind == "watch-refs":
                name = f"r-again-{attempt}"
                call = wire.storage.WatchRefs(
                    pb.WatchRefsRequest(names=[name]),
                    metadata=attacker.metadata,
                    timeout=LIVENESS_DEADLINE,
                )
                with ref_updates(users.victim_wire, attacker, name, users.attacker_commit):
                    update = next_update(call)
                    assert isinstance(update, pb.Ref) and update.name == name
                call.cancel()
            else:
                assert upload(wire, attacker, 64, [(blob_id(), 0, 64)]).stored_bytes == 64
            return
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < end:
                time.sleep(0.1)  # the server has yet to see the closed connections
                continue
            raise AssertionError(
                f"a new {kind} stream from the attacker's address is not served after it "
                f"cancelled its {STREAMS} streams: {describe(err)}"
            ) from None


# How long the server lets an upload send nothing in the test below (the default is
# longer: a slow link must not lose its uploads), and the safety net of the wait.
UPLOAD_IDLE_SECONDS = 1
IDLE_WAIT = 30.0


@pytest.mark.parametrize("sent", [0, 1000])
def test_a_stalled_upload_is_ended_by_the_server(tmp_path: Path, sent: int) -> None:
    """A header (and `sent` bytes of data), then silence: the server ends the call by
    itself with the reason "stream_idle", and gives its place back."""
    env = {"ANYSYNC_TESTONLY_UPLOAD_IDLE_SECONDS": str(UPLOAD_IDLE_SECONDS)}
    server = start_server(tmp_path / "server-home", env=env)
    release = threading.Event()
    try:
        with origin(server) as home:
            wire = home.wire()
            account = signup(wire, "slow@example.org", server.invite())

            def stall() -> Iterator[pb.UploadPackRequest]:
                yield pb.UploadPackRequest(header=pack_header(64 << 20, b"\0" * 32, []))
                if sent:
                    yield pb.UploadPackRequest(data=b"\0" * sent)
                release.wait()

            call = wire.storage.UploadPack.future(stall(), metadata=account.metadata)
            try:
                err = call.exception(timeout=IDLE_WAIT)
            except grpc.FutureTimeoutError:
                raise AssertionError(
                    f"the server kept an upload that sent nothing for {IDLE_WAIT:.0f} s"
                ) from None
            assert err is not None and reason(err) == STREAM_IDLE, describe(err)
            assert upload(wire, account, 64, [(blob_id(), 0, 64)]).stored_bytes == 64
    finally:
        release.set()
        server.stop()


STREAM_IDLE = "stream_idle"  # docs/server-limits.md; anysync.errors.StreamIdle
