"""Build, start and run the gRPC server of a server home."""

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
from anysync.server.config import parse_listen
from anysync.server.home import Home
from anysync.server.metadata import Metadata
from anysync.store import LocalStore

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 << 20  # a 1 MiB data message plus a large FindBlobs fit easily
# Each open stream holds a worker for its whole life (sync gRPC server), and every
# device in watch mode keeps one WatchRefs stream open: leave room for both.
WORKERS = 64
STOP_GRACE_SECONDS = 10


@dataclass
class RunningServer:
    grpc_server: grpc.Server
    executor: ThreadPoolExecutor
    health: health.HealthServicer
    db: Metadata
    core: service.Core
    host: str
    port: int  # the bound port, also when asked for port 0
    fingerprint: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = STOP_GRACE_SECONDS) -> None:
        """Refuse new calls, let running ones finish for `grace` seconds, close the DB."""
        self.health.enter_graceful_shutdown()
        self.core.notifier.close()
        self.grpc_server.stop(grace).wait()
        self.executor.shutdown(wait=False)
        self.db.close()


def start(home: Home, listen: str | None = None) -> RunningServer:
    """Start serving `home` on `listen` (default: the configured address)."""
    home.require_initialised()
    config = home.load_config()
    listen = listen or config.listen
    host, _ = parse_listen(listen)
    cert_pem = home.cert_pem()
    db = Metadata.open(home.metadata_db)
    try:
        core = service.Core(config, db, LocalStore(home.storage_dir(config)), home.secret())
        executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="rpc")
        server = grpc.server(
            executor,
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
        server, executor, health_servicer, db, core, host, port, tls.fingerprint(cert_pem)
    )


def serve(home: Home, listen: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    running = start(home, listen)
    # Clients pin the fingerprint; tests and scripts read the real port from here.
    print(f"AnySync server listening on {running.address}", flush=True)
    print(f"TLS certificate fingerprint (SHA-256): {running.fingerprint}", flush=True)
    log.info("serving %s", home.root)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(1):
        pass
    running.stop()
    log.info("stopped")
