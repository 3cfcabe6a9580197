"""Build, start and run the gRPC server of a server home.

`start` builds the server (used in-process by tests); `serve` is the process around it:
the metrics endpoint, signals, and the graceful stop on SIGTERM that supervisord and
container runtimes send.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health

from anysync import tls
from anysync.errors import UsageError
from anysync.server import service
from anysync.server.config import ServerConfig, parse_listen
from anysync.server.home import Home
from anysync.server.metadata import Metadata
from anysync.server.metrics import Metrics, MetricsHttpServer, MetricsInterceptor
from anysync.store import open_store

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 << 20  # a 1 MiB data message plus a large FindBlobs fit easily
# Each open stream holds a worker for its whole life (sync gRPC server), and every
# device in watch mode keeps one WatchRefs stream open: leave room for both.
WORKERS = 64
STOP_GRACE_SECONDS = 10
# After the grace period gRPC cancels the calls still running, but their handler threads
# run on until they notice; wait this long for them before closing the database.
DRAIN_SECONDS = 5


@dataclass
class RunningServer:
    grpc_server: grpc.Server
    executor: ThreadPoolExecutor
    health: health.HealthServicer
    db: Metadata
    core: service.Core
    metrics: Metrics
    config: ServerConfig
    host: str
    port: int  # the bound port, also when asked for port 0
    fingerprint: str
    metrics_http: MetricsHttpServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = STOP_GRACE_SECONDS) -> None:
        """Refuse new calls, let running ones finish for `grace` seconds, close the DB.

        An upload cut off here never reaches the database: its pack is recorded only
        after the store has all of it, so the client simply sends it again later.
        """
        self.health.enter_graceful_shutdown()  # health checks now answer NOT_SERVING
        self.core.notifier.close()  # WatchRefs streams end instead of holding the grace
        self.grpc_server.stop(grace).wait()
        if not self.metrics.wait_idle(DRAIN_SECONDS):
            log.warning("RPC handlers still running after %d s; closing anyway", DRAIN_SECONDS)
        self.executor.shutdown(wait=False)
        if self.metrics_http is not None:
            self.metrics_http.close()
        self.db.close()


def start(home: Home, listen: str | None = None) -> RunningServer:
    """Start serving `home` on `listen` (default: the configured address)."""
    home.require_initialised()
    config = home.load_config()
    listen = listen or config.listen
    host, _ = parse_listen(listen)
    cert_pem = home.cert_pem()
    db = Metadata.open(home.metadata_db)
    metrics = Metrics(home.metadata_db)
    try:
        store = open_store(config, home.root)
        core = service.Core(config, db, store, home.secret(), counter=metrics)
        executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="rpc")
        server = grpc.server(
            executor,
            interceptors=[MetricsInterceptor(metrics)],
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        health_servicer = service.register(server, core)
        credentials = grpc.ssl_server_credentials([(home.key_pem(), cert_pem)])
        try:
            port = server.add_secure_port(listen, credentials)
        except RuntimeError as err:
            raise UsageError(f"cannot listen on {listen}: {err}") from None
        if port == 0:
            raise UsageError(f"cannot listen on {listen}")
        server.start()
    except BaseException:
        db.close()
        raise
    return RunningServer(
        server,
        executor,
        health_servicer,
        db,
        core,
        metrics,
        config,
        host,
        port,
        tls.fingerprint(cert_pem),
    )


class _StopBeforeServing(BaseException):
    """A stop signal while start() was still running (e.g. waiting for the store)."""


def serve(home: Home, listen: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    stopping = threading.Event()
    serving = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stopping.set()
        if not serving:  # nothing in flight yet: don't wait for the store's retries
            raise _StopBeforeServing

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        running = start(home, listen)  # closes what it opened if interrupted
        serving = True
    except _StopBeforeServing:
        log.info("stopped before serving")
        return
    try:
        _announce(running)
        log.info("serving %s", home.root)
        running.metrics_http = _metrics_endpoint(running)
        while not stopping.wait(1):
            pass
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
