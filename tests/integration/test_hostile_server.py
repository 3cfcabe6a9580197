"""Issue #12, cases 6 and 7: one server per home and per port; garbage on the wire.

6. A second `anysync-server run` on a home that is being served exits at once, non-zero,
   with one line that names the home; a server of another home cannot take a port that
   is in use (no SO_REUSEPORT: it would share the port's connections with the first).
7. Bytes that are no protobuf, sent to every method of the protocol (unary and
   streaming, listed from the proto descriptors), are refused as INVALID_ARGUMENT, and
   the server does not log them as its own errors.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message as protobuf_message
from google.protobuf.descriptor import MethodDescriptor

from anysync.v1 import anysync_pb2 as pb
from tests.integration.harness import SERVER, Server, base_env
from tests.integration.hostile import (
    CALL_DEADLINE,
    Account,
    Wire,
    assert_serving,
    describe,
    edit_config,
    log_since,
    log_size,
    origin,
    pack_header,
    signup,
    start_server,
)
from tests.ports import free_port

# ---------------------------------------------------------------- 6. two servers


@dataclass
class Outcome:
    returncode: int | None  # None: it started serving (and was stopped by the test)
    stdout: str
    stderr: str


def run_server(home: Path, listen: str, logs: Path) -> Outcome:
    """`anysync-server run` until it exits or says it is listening."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [SERVER, "--home", str(home), "run", "--listen", listen],
            env=base_env(),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60  # a safety net: either comes within a second
        while proc.poll() is None and "listening on" not in out.read_text():
            assert time.monotonic() < deadline, "the second server neither served nor exited"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
            code = None
        else:
            code = proc.returncode
    return Outcome(code, out.read_text(), err.read_text())


@pytest.fixture
def first(tmp_path: Path) -> Iterator[tuple[Server, Wire, Account]]:
    srv = start_server(tmp_path / "server-home")
    try:
        with origin(srv) as o:
            wire = o.wire()
            yield srv, wire, signup(wire, "first@example.org", srv.invite())
    finally:
        srv.stop()


def test_a_second_server_on_the_same_home_exits_with_a_reason(
    first: tuple[Server, Wire, Account], tmp_path: Path
) -> None:
    server, wire, account = first
    second = run_server(server.home, f"127.0.0.1:{free_port()}", tmp_path / "second")
    assert second.returncode is not None, f"a second server served the same home:\n{second}"
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, f"not a one-line reason:\n{second.stderr}"
    assert lines[0].startswith("anysync-server: error:"), lines
    assert str(server.home) in lines[0] and "running" in lines[0], lines
    assert "Traceback" not in second.stdout + second.stderr
    assert_serving(wire, account, "after a second server tried its home")


def test_a_server_of_another_home_cannot_share_the_port(
    first: tuple[Server, Wire, Account], tmp_path: Path
) -> None:
    server, wire, account = first
    other = Server(tmp_path / "other-home")
    other.admin("init")
    edit_config(other, {"metrics.listen": '""'})
    second = run_server(other.home, server.address, tmp_path / "other")
    assert second.returncode is not None, f"a second server took port {server.port}:\n{second}"
    assert second.returncode != 0
    assert f"cannot listen on {server.address}" in second.stderr, second.stderr
    assert_serving(wire, account, "after a second server tried its port")


# ---------------------------------------------------------------- 7. garbage


# Bytes that no protobuf parser takes: an unterminated varint; a field with wire type 7
# (there is none); a length-delimited field longer than the message.
GARBAGE = {
    "unterminated-varint": b"\xff" * 12,
    "wire-type-7": b"\x0f\x01\x02\x03",
    "overlong-field": b"\x0a\xff\x01" + b"x" * 16,
}
METHODS = [m for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods]


@pytest.fixture(scope="module")
def garbage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("garbage") / "server-home")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def garbage_client(garbage_server: Server) -> Iterator[tuple[Wire, Account]]:
    with origin(garbage_server) as o:
        wire = o.wire()
        yield wire, signup(wire, "garbage@example.org", garbage_server.invite())


def raw_call(wire: Wire, method: MethodDescriptor, requests: list[bytes], account: Account) -> None:
    """Call `method` with raw request bytes (no serializer), reading every answer."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    kwargs: dict[str, Any] = {"metadata": account.metadata, "timeout": CALL_DEADLINE}
    ch = wire.channel
    if method.client_streaming and method.server_streaming:
        raise AssertionError(f"{path}: no bidirectional methods expected")
    if method.client_streaming:
        ch.stream_unary(path)(iter(requests), **kwargs)
    elif method.server_streaming:
        list(ch.unary_stream(path)(requests[0], **kwargs))
    else:
        ch.unary_unary(path)(requests[0], **kwargs)


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.rpartition(".")[2])
def test_garbage_is_invalid_argument_and_no_server_error(
    garbage_server: Server,
    garbage_client: tuple[Wire, Account],
    method: MethodDescriptor,
    garbage: str,
) -> None:
    wire, account = garbage_client
    raw = GARBAGE[garbage]
    request_type = getattr(pb, method.input_type.name)
    with pytest.raises(protobuf_message.DecodeError):
        request_type.FromString(raw)  # the bytes really are no message
    offset = log_size(garbage_server)
    requests = [raw]
    if method.client_streaming:  # also after a well-formed first message
        requests = [raw] if garbage != "wire-type-7" else [header_message(), raw]
    with pytest.raises(grpc.RpcError) as refused:
        raw_call(wire, method, requests, account)
    err = refused.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, describe(err)
    log = log_since(garbage_server, offset)
    assert "ERROR" not in log and "Traceback" not in log, log
    assert_serving(wire, account, f"after garbage to {method.name}", prelogin=False)


def header_message() -> bytes:
    header = pack_header(1024, b"\0" * 32, [])
    return bytes(pb.UploadPackRequest(header=header).SerializeToString())
