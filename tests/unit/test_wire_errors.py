"""Errors keep their type across the wire: an in-process gRPC server (grpc.aio) over TLS
whose one handler raises the error the request names, through the real server's error
mapping (rpcbase.rpc, rpcbase.STATUS), and the real client (Remote) that maps the failed
call back."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import grpc
import pytest

from anysync import tls
from anysync.client.remote import Remote
from anysync.errors import (
    WIRE_ERRORS,
    AnySyncError,
    AuthError,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ServerOutOfSpace,
    by_reason,
)
from anysync.server import rpcbase
from anysync.server.app import LoopThread
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc

# The message names no type, so only the reason can tell the client which one it is.
MESSAGE = "the server refused this"


class RaisingAccounts(pb_grpc.AccountsServicer):
    """PreLogin raises the wire error whose reason is the request's e-mail."""

    @rpcbase.rpc
    async def PreLogin(self, request: pb.PreLoginRequest, context: object) -> None:
        if request.email == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        cls = by_reason(request.email)
        assert cls is not None
        raise cls(MESSAGE)


class OldServerAccounts(pb_grpc.AccountsServicer):
    """A server from before reasons: a status code and a message, nothing else.
    The e-mail is "CODE_NAME message"."""

    async def PreLogin(
        self, request: pb.PreLoginRequest, context: grpc.aio.ServicerContext
    ) -> None:
        code, _, message = request.email.partition(" ")
        await context.abort(grpc.StatusCode[code], message)


def _serve(servicer: pb_grpc.AccountsServicer) -> Iterator[Remote]:
    key, cert = tls.generate_self_signed(["127.0.0.1"])
    loop = LoopThread()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_AccountsServicer_to_server(servicer, server)
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
        await server.start()
        return server, port

    server, port = loop.call(start())
    remote = Remote(f"127.0.0.1:{port}", cert)
    yield remote
    remote.close()
    loop.call(server.stop(None))
    loop.close()


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    yield from _serve(RaisingAccounts())


@pytest.fixture(scope="module")
def old_remote() -> Iterator[Remote]:
    yield from _serve(OldServerAccounts())


@pytest.mark.parametrize("cls", WIRE_ERRORS, ids=lambda cls: cls.reason)
def test_every_wire_error_keeps_its_type(remote: Remote, cls: type[AnySyncError]) -> None:
    with pytest.raises(AnySyncError) as caught:
        remote.pre_login(cls.reason)
    assert type(caught.value) is cls
    assert caught.value.message == MESSAGE


def test_a_full_disk_is_out_of_space(remote: Remote) -> None:
    with pytest.raises(ServerOutOfSpace, match=r"^the server is out of disk space$"):
        remote.pre_login("ENOSPC")


def test_every_wire_error_has_a_status_code() -> None:
    for cls in WIRE_ERRORS:
        mapped = rpcbase.status_for(cls("x"))
        assert mapped is not None, cls
    assert rpcbase.status_for(RuntimeError("bug")) is None


def test_reasons_name_one_class_each() -> None:
    assert all(by_reason(cls.reason) is cls for cls in WIRE_ERRORS)
    assert by_reason("") is None
    assert by_reason("from_a_newer_server") is None


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("NOT_FOUND no such ref", NotFound),
        ("UNAUTHENTICATED unknown token", AuthError),
        ("RESOURCE_EXHAUSTED quota exceeded: 10 of 10 bytes used", QuotaExceeded),
        ("RESOURCE_EXHAUSTED too many failed logins; try again in 5 s", RateLimited),
        ("RESOURCE_EXHAUSTED the server is out of disk space", AnySyncError),
        ("INVALID_ARGUMENT a ref name is 1 to 200 characters", AnySyncError),
    ],
)
def test_without_a_reason_the_status_code_decides(
    old_remote: Remote, email: str, expected: type[AnySyncError]
) -> None:
    with pytest.raises(AnySyncError) as caught:
        old_remote.pre_login(email)
    assert type(caught.value) is expected
    assert email.partition(" ")[2] in caught.value.message
