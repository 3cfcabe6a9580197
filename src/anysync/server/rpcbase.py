"""What every RPC handler shares, apart from the wire types: the one table of status
codes (`STATUS`), the mapping of errors to aborted calls with their reason, the handler
decorators, and `CallGuard`, the interceptor on every method.

CallGuard answers a message that does not parse with INVALID_ARGUMENT (gRPC itself would
answer UNKNOWN and log an error with a traceback) and holds each streaming call's place
for its client address (anysync.server.streams), refusing one over the cap.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from anysync.errors import (
    REASON_KEY,
    AlreadyExists,
    AnySyncError,
    AuthError,
    ClientTooOld,
    Conflict,
    IntegrityError,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServerOutOfSpace,
    StreamIdle,
    TooManyStreams,
    UsageError,
    WrongPassword,
)
from anysync.server import auth
from anysync.server.streams import Place, StreamGate
from anysync.store import OutOfRangeError

log = logging.getLogger(__name__)

# The one table of status codes. First match wins: subclasses before their bases.
STATUS: tuple[tuple[type[AnySyncError], grpc.StatusCode], ...] = (
    (OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (WrongPassword, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Conflict, grpc.StatusCode.ABORTED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TooManyStreams, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServerOutOfSpace, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamIdle, grpc.StatusCode.DEADLINE_EXCEEDED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (ClientTooOld, grpc.StatusCode.FAILED_PRECONDITION),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (IntegrityError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(err: BaseException) -> tuple[grpc.StatusCode, AnySyncError] | None:
    """The status code and typed error to send for `err`; None for a server fault."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        err = ServerOutOfSpace()
    for cls, code in STATUS:
        if isinstance(err, cls):
            assert isinstance(err, AnySyncError)
            return code, err
    return None


async def abort(context: grpc.aio.ServicerContext, err: Exception, method: str) -> NoReturn:
    if isinstance(err, grpc.aio.AbortError):
        raise err  # already aborted (by CallGuard)
    mapped = status_for(err)
    if mapped is not None:
        code, typed = mapped
        # Messages are written for users and never contain secrets: safe to log.
        if isinstance(typed, ServerOutOfSpace):
            log.error("%s: the disk is full", method)
        else:
            log.info("%s: %s: %s", method, code.name, typed.message)
        # The error's exact type, for the client: anysync.errors.by_reason.
        trailing = ((REASON_KEY, typed.reason),) if typed.reason else ()
        await context.abort(code, typed.message, trailing)
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")
    raise AssertionError("context.abort returned")


_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Ctx = Any  # grpc.aio.ServicerContext: untyped


def rpc(
    handler: Callable[[_S, _Req, Ctx], Awaitable[_Resp]],
) -> Callable[[_S, _Req, Ctx], Awaitable[_Resp]]:
    """Map exceptions to status codes for a handler returning one response."""

    @functools.wraps(handler)
    async def wrapper(self: _S, request: _Req, context: Ctx) -> _Resp:
        try:
            return await handler(self, request, context)
        except Exception as err:
            await abort(context, err, handler.__name__)

    return wrapper


def rpc_stream(
    handler: Callable[[_S, _Req, Ctx], AsyncIterator[_Resp]],
) -> Callable[[_S, _Req, Ctx], AsyncIterator[_Resp]]:
    """Map exceptions to status codes for a handler streaming its responses."""

    @functools.wraps(handler)
    async def wrapper(self: _S, request: _Req, context: Ctx) -> AsyncIterator[_Resp]:
        try:
            async for response in handler(self, request, context):
                yield response
        except Exception as err:
            await abort(context, err, handler.__name__)

    return wrapper


def metadata_value(context: Ctx, key: str) -> str | None:
    for k, value in context.invocation_metadata() or ():
        if k == key:
            return str(value)
    return None


def address(context: Ctx) -> str:
    return auth.peer_host(context.peer())


# ---------------------------------------------------------------- the guard


class _Unparsed:
    """What a request that does not parse turns into, for the handler to refuse."""


UNPARSED = _Unparsed()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:
            return UNPARSED

    return parse


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Garbage in → INVALID_ARGUMENT; every streaming call holds its address's place."""

    def __init__(self, gate: StreamGate, raw_requests: frozenset[str] = frozenset()) -> None:
        """`raw_requests`: methods whose handlers get the request's bytes and parse them
        themselves (when they are ready to: a queued call then holds only its bytes)."""
        self.gate = gate
        self.raw_requests = raw_requests

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        raw = method in self.raw_requests
        deserializer = None if raw else _tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            return handler  # no such method in this protocol
        if handler.request_streaming:  # UploadPack: the handler refuses unparsed messages
            return grpc.stream_unary_rpc_method_handler(
                self._stream_in(method, handler.stream_unary),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._stream_out(method, handler.unary_stream),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary(method, handler.unary_unary),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: Ctx) -> Any:
            await _refuse_unparsed(request, context, method)
            return await behaviour(request, context)

        return call

    def _stream_out(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: Ctx) -> AsyncIterator[Any]:
            await _refuse_unparsed(request, context, method)
            with await self._place(context, method):
                result = behaviour(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a handler that writes with context.write (the health service)
                    await result

        return call

    def _stream_in(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(requests: Any, context: Ctx) -> Any:
            with await self._place(context, method):
                return await behaviour(requests, context)

        return call

    async def _place(self, context: Ctx, method: str) -> Place:
        """The stream's place for its address; over the cap, the call is refused."""
        try:
            return self.gate.hold_address(address(context))
        except TooManyStreams as err:
            await abort(context, err, method)


async def _refuse_unparsed(request: Any, context: Ctx, method: str) -> None:
    if request is UNPARSED:
        log.info("%s: INVALID_ARGUMENT: the request does not parse", method)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid message of this call"
        )
