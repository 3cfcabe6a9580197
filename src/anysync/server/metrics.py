"""Prometheus metrics: counters kept in memory, gauges read from the metadata DB per scrape.

Text exposition format 0.0.4, written here (a few lines; no client library), served by a
tiny `http.server` thread at http://[metrics] listen/metrics (loopback by default: the
numbers say how many accounts there are and how busy they are).

- anysync_requests_total{method,code}  every finished RPC, by its final gRPC status
- anysync_errors_total{method}         RPCs that failed on the server's side (see SERVER_FAULTS)
- anysync_requests_in_flight           RPCs running now
- anysync_bytes_total{direction}       pack bytes received ("in") and sent ("out")
- anysync_users, anysync_stored_bytes  accounts, and the sum of their used_bytes
- anysync_condemned_bytes              charged bytes condemned by prune, not yet deleted
- anysync_reaped_bytes_total           charged bytes of condemned packs deleted
- anysync_scrub_missing_packs          last scrub: recorded packs missing from the store
- anysync_scrub_orphan_packs, _bytes   last scrub: objects without a pack, past orphan_age
- anysync_scrub_last_run_timestamp_seconds  when the last scrub finished (none: no scrub yet)
- anysync_up                           1 while the server answers

RPC outcomes come from a grpc.ServerInterceptor, so the servicers know nothing of metrics.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc

from anysync.errors import UsageError
from anysync.server.config import parse_listen

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Like HTTP 5xx: worth an alert. Client mistakes (NOT_FOUND, a lost CAS, quota) are not.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_DB_TIMEOUT = 2.0  # seconds a scrape may wait for the database


class Metrics:
    """The server's counters; also the `storage.ByteCounter` of its Core."""

    def __init__(self, metadata_db: Path | None = None) -> None:
        self.metadata_db = metadata_db
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._errors: dict[str, int] = {}
        self._bytes = {"in": 0, "out": 0}
        self._in_flight = 0
        self._reaped = 0
        self._idle = threading.Condition(self._lock)

    def add_bytes(self, direction: str, n: int) -> None:
        with self._lock:
            self._bytes[direction] = self._bytes.get(direction, 0) + n

    def add_reaped(self, charged: int) -> None:
        """A condemned pack of `charged` bytes was deleted (the reaper's ReapCounter)."""
        with self._lock:
            self._reaped += charged

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished(self, method: str, code: grpc.StatusCode) -> None:
        with self._lock:
            key = (method, code.name)
            self._requests[key] = self._requests.get(key, 0) + 1
            if code in SERVER_FAULTS:
                self._errors[method] = self._errors.get(method, 0) + 1
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no RPC handler is running; False if some still are after `timeout`."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def render(self) -> str:
        """The exposition text of one scrape."""
        with self._lock:
            requests = sorted(self._requests.items())
            errors = sorted(self._errors.items())
            byte_counts = sorted(self._bytes.items())
            in_flight = self._in_flight
            reaped = self._reaped
        out: list[str] = []
        _family(out, "anysync_up", "gauge", "1 while the server answers.", [({}, 1)])
        _family(
            out,
            "anysync_requests_total",
            "counter",
            "RPCs finished, by method and final gRPC status code.",
            [({"method": m, "code": c}, n) for (m, c), n in requests],
        )
        _family(
            out,
            "anysync_errors_total",
            "counter",
            "RPCs that failed on the server's side (UNKNOWN, INTERNAL, UNAVAILABLE, "
            "DATA_LOSS, UNIMPLEMENTED).",
            [({"method": m}, n) for m, n in errors],
        )
        _family(
            out,
            "anysync_requests_in_flight",
            "gauge",
            "RPCs running now.",
            [({}, in_flight)],
        )
        _family(
            out,
            "anysync_bytes_total",
            "counter",
            "Pack bytes received from (in) and sent to (out) clients through this server.",
            [({"direction": d}, n) for d, n in byte_counts],
        )
        _family(
            out,
            "anysync_reaped_bytes_total",
            "counter",
            "Charged bytes of condemned packs deleted after their grace period.",
            [({}, reaped)],
        )
        usage = self._usage()
        if usage is not None:
            (count, stored, condemned), scrub = usage
            _family(out, "anysync_users", "gauge", "Accounts.", [({}, count)])
            _family(
                out,
                "anysync_stored_bytes",
                "gauge",
                "Bytes stored for all accounts (sum of their used bytes).",
                [({}, stored)],
            )
            _family(
                out,
                "anysync_condemned_bytes",
                "gauge",
                "Charged bytes condemned by prune and not yet deleted (outside the quota).",
                [({}, condemned)],
            )
            if scrub is not None:
                _scrub_families(out, scrub)
        return "".join(out)

    def _usage(self) -> tuple[tuple[int, int, int], _ScrubRow | None] | None:
        """(accounts, stored bytes, condemned bytes) and the last scrub's findings
        through a fresh read-only connection; None if unreadable."""
        if self.metadata_db is None:
            return None
        uri = f"file:{quote(str(self.metadata_db))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=_DB_TIMEOUT)
            try:
                row = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(used_bytes), 0),"
                    " COALESCE(SUM(condemned_bytes), 0) FROM users"
                )
                count, stored, condemned = row.fetchone()
                scrub = conn.execute(
                    "SELECT at, missing_packs, orphan_packs, orphan_bytes FROM scrub_last"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as err:
            log.warning("metrics: cannot read %s: %s", self.metadata_db, err)
            return None
        return (int(count), int(stored), int(condemned)), scrub


_ScrubRow = tuple[int, int, int, int]  # scrub_last: at, missing, orphans, orphan bytes


def _scrub_families(out: list[str], scrub: _ScrubRow) -> None:
    at, missing, orphans, orphan_bytes = scrub
    _family(
        out,
        "anysync_scrub_last_run_timestamp_seconds",
        "gauge",
        "When the last scrub of the object store finished (unix time).",
        [({}, at)],
    )
    _family(
        out,
        "anysync_scrub_missing_packs",
        "gauge",
        "Recorded packs the last scrub did not find in the object store (data lost).",
        [({}, missing)],
    )
    _family(
        out,
        "anysync_scrub_orphan_packs",
        "gauge",
        "Objects without a pack the last scrub found, known for at least [scrub] orphan_age.",
        [({}, orphans)],
    )
    _family(
        out,
        "anysync_scrub_orphan_bytes",
        "gauge",
        "Bytes of those objects without a pack.",
        [({}, orphan_bytes)],
    )


def _family(
    out: list[str], name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], int]]
) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
    for labels, value in samples:
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{inner}}} {value}\n")
        else:
            out.append(f"{name} {value}\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# ---------------------------------------------------------------- gRPC interceptor


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Counts every RPC by its final status code, for unary and streaming handlers alike."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        method: str = handler_call_details.method
        if handler.response_streaming:
            behaviour = handler.unary_stream or handler.stream_stream
            wrapped: Any = self._streaming(method, behaviour)
        else:
            behaviour = handler.unary_unary or handler.stream_unary
            wrapped = self._unary(method, behaviour)
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.metrics.started()
            outcome: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as err:
                outcome = err
                raise
            finally:
                self.metrics.finished(method, _final_code(context, outcome))

        return call

    def _streaming(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self.metrics.started()
            outcome: BaseException | None = None
            try:
                result = behaviour(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a handler that writes with context.write
                    await result
            except BaseException as err:  # also GeneratorExit: the client went away
                outcome = err
                raise
            finally:
                self.metrics.finished(method, _final_code(context, outcome))

        return call


def _final_code(
    context: grpc.aio.ServicerContext, outcome: BaseException | None
) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()  # set by context.abort / set_code
    if code is not None:
        return code
    if outcome is None:
        return grpc.StatusCode.OK
    if isinstance(outcome, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # an exception without abort()


# ---------------------------------------------------------------- HTTP endpoint


class MetricsHttpServer:
    """GET /metrics on a daemon thread; `close()` stops it."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        host, port = parse_listen(listen)
        host = host.strip("[]")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape every 15 s is not news

        server_class = _V6Server if ":" in host else ThreadingHTTPServer
        try:
            self._httpd = server_class((host, port), Handler)
        except OSError as err:
            raise UsageError(f"[metrics] cannot listen on {listen}: {err.strerror}") from None
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.address = f"{listen.rpartition(':')[0]}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
