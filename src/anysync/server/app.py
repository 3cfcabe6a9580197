"""Build, start and run the gRPC server of a server home.

`start` builds the server (used in-process by tests) on an asyncio event loop of its
own thread, with the bounded pool beside it (anysync.server.pool); `serve` is the
process around it: the metrics endpoint, signals, and the graceful stop on SIGTERM that
supervisord and container runtimes send.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health

from anysync.errors import UsageError
from anysync.server import service
from anysync.server.config import ServerConfig, parse_listen
from anysync.server.gc import ReaperThread
from anysync.server.home import Home, fingerprint
from anysync.server.metadata import Metadata
from anysync.server.metrics import Metrics, MetricsHttpServer, MetricsInterceptor
from anysync.server.pool import BlockingPool
from anysync.server.rpcbase import CallGuard
from anysync.server.scrub import Scrubber, ScrubThread
from anysync.server.streams import Limits
from anysync.store import open_store

log = logging.getLogger(__name__)

# The largest message either way. An UploadPack header lists every blob of a pack (about
# 45 bytes each): a 16 MiB pack of small blobs needs several MiB. Data messages are
# 1 MiB; a FindBlobs of 10,000 IDs is 340 KiB.
MAX_MESSAGE_BYTES = 8 << 20
# What a client may send on one stream before the server reads it: bounds the memory of
# streams that wait (for an upload slot, for the pool). 256 KiB per round trip is 256 MB/s
# on a LAN and 5 MB/s (40 Mbit/s) per upload at 50 ms, about a home line's upstream;
# 1 MiB took a storm of 16 uploads to 182 MiB (bench/server_load.py, design.md §9.3).
STREAM_WINDOW_BYTES = 256 << 10
STOP_GRACE_SECONDS = 10
# After the grace period gRPC cancels the calls still running, but work already in the
# pool runs on until it returns; wait this long for it before closing the database.
DRAIN_SECONDS = 5
# glibc makes a malloc arena per thread that allocates (up to 8 per core), and each keeps
# freed memory: two are enough for one loop and a small pool. And it serves blocks of
# up to 32 MiB from its heaps once such a block was freed (a dynamic threshold), where
# they fragment; a fixed threshold keeps 1 MiB messages in mmap, returned when freed.
TRIM_EVERY_SECONDS = 10  # how often free heap memory goes back to the system
MALLOC_ARENAS = 2
MALLOC_MMAP_THRESHOLD = 256 << 10
_T = TypeVar("_T")


class LoopThread:
    """An asyncio event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run `coro` on the loop and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class RunningServer:
    grpc_server: grpc.aio.Server
    loop: LoopThread
    pool: BlockingPool
    health: health.aio.HealthServicer
    db: Metadata
    core: service.Core
    metrics: Metrics
    config: ServerConfig
    host: str
    port: int  # the bound port, also when asked for port 0
    fingerprint: str
    reaper: ReaperThread
    scrub: ScrubThread | None = None  # None: [scrub] every = 0s
    metrics_http: MetricsHttpServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = STOP_GRACE_SECONDS) -> None:
        """Refuse new calls, let running ones finish for `grace` seconds, close the DB.

        An upload cut off here never reaches the database: its pack is recorded only
        after the store has all of it, so the client simply sends it again later.
        """

        async def stop_serving() -> None:
            await self.health.enter_graceful_shutdown()  # health checks: NOT_SERVING
            self.core.notifier.close()  # WatchRefs streams end instead of holding the grace
            await self.grpc_server.stop(grace)

        self.loop.call(stop_serving())
        self.reaper.close()  # a deletion under way finishes; a later step waits for restart
        if self.scrub is not None:
            self.scrub.close()  # a scrub under way stops; the next start runs it again
        drained = self.metrics.wait_idle(DRAIN_SECONDS)
        if not (drained and self.pool.wait_idle(DRAIN_SECONDS)):
            log.warning("RPC work still running after %d s; closing anyway", DRAIN_SECONDS)
        self.pool.shutdown()
        self.loop.close()
        if self.metrics_http is not None:
            self.metrics_http.close()
        self.db.close()


@dataclass(frozen=True, slots=True)
class GcOverrides:
    """`run --gc-grace/--gc-min-pack-age`: seconds that replace server.toml's [gc]."""

    grace_seconds: int | None = None
    min_pack_age_seconds: int | None = None

    def apply(self, config: ServerConfig) -> ServerConfig:
        if self.grace_seconds is not None:
            config = replace(config, gc_grace_seconds=self.grace_seconds)
        if self.min_pack_age_seconds is not None:
            config = replace(config, gc_min_pack_age_seconds=self.min_pack_age_seconds)
        return config


def start(
    home: Home,
    listen: str | None = None,
    limits: Limits | None = None,
    gc: GcOverrides | None = None,
) -> RunningServer:
    """Start serving `home` on `listen` (default: the configured address)."""
    home.require_initialised()
    config = (gc or GcOverrides()).apply(home.load_config())
    listen = listen or config.listen
    limits = limits or Limits.from_env()
    host, _ = parse_listen(listen)
    cert_pem = home.cert_pem()
    db = Metadata.open(home.metadata_db)
    metrics = Metrics(home.metadata_db)
    try:
        store = open_store(config, home.root)
        pool = BlockingPool(limits.pool_threads)
        core = service.Core(
            config,
            db,
            store,
            home.secret(),
            pool,
            home.root / "tmp",
            limits,
            counter=metrics,
            reaped=metrics,
        )
        # Deletions a crash interrupted are finished before the first call is taken.
        core.reaper.run_logged()
        credentials = grpc.ssl_server_credentials([(home.key_pem(), cert_pem)])
        loop = LoopThread()
        try:
            server, health_servicer, port = loop.call(
                _serve_on_loop(core, metrics, listen, credentials)
            )
        except BaseException:
            loop.close()
            pool.shutdown()
            raise
    except BaseException:
        db.close()
        raise
    reaper = ReaperThread(core.reaper, config.gc_reap_every_seconds)
    scrub = None
    if config.scrub_every_seconds:
        scrubber = Scrubber(db, store, home.secret(), core.reaper, config.scrub_orphan_age_seconds)
        scrub = ScrubThread(scrubber, config.scrub_every_seconds)
    return RunningServer(
        server,
        loop,
        pool,
        health_servicer,
        db,
        core,
        metrics,
        config,
        host,
        port,
        fingerprint(cert_pem),
        reaper,
        scrub,
    )


async def _serve_on_loop(
    core: service.Core, metrics: Metrics, listen: str, credentials: grpc.ServerCredentials
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(metrics), CallGuard(core.gate, service.RAW_REQUESTS)],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Another process must not be able to bind the same port and take calls.
            ("grpc.so_reuseport", 0),
            # A fixed flow-control window per stream: gRPC's BDP probing grows windows
            # to many MiB, and what the peers may send unasked is what the server holds.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
        ],
    )
    health_servicer = await service.register(server, core)
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError as err:
        raise UsageError(f"cannot listen on {listen}: {err}") from None
    if port == 0:
        raise UsageError(f"cannot listen on {listen}")
    await server.start()
    return server, health_servicer, port


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    # mallopt and malloc_trim are glibc's; musl and macOS have neither.
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def limit_malloc_arenas() -> None:
    """On glibc, mallopt() as MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ would do
    (the environment cannot: it is read before this process runs). Elsewhere nothing."""
    libc = _glibc()
    if libc is None:
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_arena_max, MALLOC_ARENAS)
    libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)


def free_memory_releaser() -> Callable[[], None] | None:
    """glibc's malloc_trim(0): gives the free pages of the heaps back to the system.
    Without it, memory freed after a burst of uploads stays with the process (the RSS
    60 s after a storm stayed near its peak). None off glibc."""
    libc = _glibc()
    if libc is None:
        return None
    trim = libc.malloc_trim

    def release() -> None:
        trim(0)

    return release


class _StopBeforeServing(BaseException):
    """A stop signal while start() was still running (e.g. waiting for the store)."""


def serve(
    home: Home,
    listen: str | None = None,
    gc: GcOverrides | None = None,
    welcome: Callable[[RunningServer], None] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully. `welcome`: called once
    serving, to tell a new home's owner how to connect."""
    stopping = threading.Event()
    serving = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stopping.set()
        if not serving:  # nothing in flight yet: don't wait for the store's retries
            raise _StopBeforeServing

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    limit_malloc_arenas()
    try:
        running = start(home, listen, gc=gc)  # closes what it opened if interrupted
        serving = True
    except _StopBeforeServing:
        log.info("stopped before serving")
        return
    try:
        _announce(running)
        if welcome is not None:
            welcome(running)
        log.info("serving %s", home.root)
        running.metrics_http = _metrics_endpoint(running)
        release = free_memory_releaser()
        seconds = 0
        while not stopping.wait(1):
            seconds += 1
            if release is not None and seconds % TRIM_EVERY_SECONDS == 0:
                release()
    finally:
        running.stop()
    log.info("stopped")


def _announce(running: RunningServer) -> None:
    """Clients pin the fingerprint; tests and scripts read the real port from here."""
    if running.config.log_format == "json":  # keep standard output all JSON lines
        log.info(
            "listening",
            extra={"address": running.address, "fingerprint": running.fingerprint},
        )
        return
    print(f"AnySync server listening on {running.address}", flush=True)
    print(f"TLS certificate fingerprint (SHA-256): {running.fingerprint}", flush=True)


def _metrics_endpoint(running: RunningServer) -> MetricsHttpServer | None:
    listen = running.config.metrics_listen
    if not listen:
        return None
    try:
        endpoint = MetricsHttpServer(running.metrics, listen)
    except UsageError as err:
        # Backups matter more than graphs: serve anyway, and say so loudly.
        log.error("%s; serving without metrics", err)
        return None
    log.info("metrics at http://%s/metrics", endpoint.address)
    return endpoint
