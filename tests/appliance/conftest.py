from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from anysync import crypto, tls
from anysync.server import app
from anysync.server.app import RunningServer
from anysync.server.home import Home, init_home
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc


@dataclass
class InProcess:
    """A real server in this process (local store, open sign-up) and a TLS channel to it."""

    running: RunningServer
    home: Home
    channel: grpc.Channel
    stopped: bool = False

    def signup(self, email: str = "a@example.org") -> tuple[tuple[str, str], ...]:
        """A new account; returns the call metadata that authenticates its device."""
        box_secret, box_public = crypto.new_box_keypair()
        reply = pb_grpc.AccountsStub(self.channel).Signup(
            pb.SignupRequest(
                email=email,
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

    def stop(self, grace: float | None = None) -> None:
        if not self.stopped:
            self.stopped = True
            self.running.stop(grace)


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")
    home = init_home(tmp_path / "server-home")
    text = home.config_file.read_text().replace('registration = "invite"', 'registration = "open"')
    home.config_file.write_text(text)
    running = app.start(home, "127.0.0.1:0")
    cert = home.cert_pem()
    channel = grpc.secure_channel(
        f"127.0.0.1:{running.port}",
        grpc.ssl_channel_credentials(root_certificates=cert),
        options=[("grpc.ssl_target_name_override", tls.dns_name_for_verification(cert))],
    )
    server = InProcess(running, home, channel)
    try:
        yield server
    finally:
        channel.close()
        server.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
