"""A real Secret Service for tests: gnome-keyring-daemon on a private D-Bus session bus,
with its default ("login") collection unlocked, and helpers that lock and unlock it the
way a desktop session does, so the client's keyring protection is tested against the
real daemon and the real `keyring` package rather than a fake.

The bus is started from a configuration of our own that lists no service directories:
nothing is D-Bus-activated behind the fixture's back (no second keyring daemon, no
gcr-prompter), so teardown leaves no process, and an unlock that would need a person
at a prompt is dismissed at once (keyring.errors.KeyringLocked) instead of waiting for
one. That is what a headless session sees from a real desktop install too: there the
prompter is activated but exits, having no display.

The keyring's password is random, goes to the daemon on stdin and over D-Bus, and is
never in an argv or an environment.

    with secret_service(tmp_path) as service:
        subprocess.run([...], env=service.child_env())
        service.lock()
        service.unlock()

In CI (tests/conftest.py) a skip fails the run: there the service must run
(scripts/deps-keyring.sh installs it)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PACKAGES = "apt-get install gnome-keyring dbus-daemon (scripts/deps-keyring.sh, run by make deps)"
# Seconds for the start (~0.05 s here) and each D-Bus call: generous, CI machines are noisy.
TIMEOUT = 20.0
# What a child must not inherit: a display lets the daemon show a real unlock prompt.
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY")

SECRETS_PATH = "/org/freedesktop/secrets"
SECRETS_NAME = "org.freedesktop.secrets"
SERVICE_INTERFACE = "org.freedesktop.Secret.Service"
# gnome-keyring's own (unofficial) interface for unlocking with the password, without a
# prompt; the Secret Service API itself has only the prompting Unlock.
GNOME_INTERFACE = "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def secret_service_unavailable() -> str | None:
    """Why a real Secret Service cannot run here, or None when it can."""
    for program in ("dbus-daemon", "gnome-keyring-daemon"):
        if shutil.which(program) is None:
            return f"no {program} on PATH: {PACKAGES}"
    try:
        import jeepney  # noqa: F401
        import keyring  # noqa: F401
        import secretstorage  # noqa: F401
    except ImportError as e:
        return f"Python package {e.name} is missing: make install (keyring brings it)"
    return None


@dataclass
class SecretService:
    """A running bus + daemon. `env` is what a child process needs to reach them."""

    address: str
    runtime_dir: Path
    _password: str = field(repr=False)
    bus_pid: int
    daemon_pid: int = 0  # gnome-keyring-daemon's, for faults such as SIGSTOP (a hung service)

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.address, "XDG_RUNTIME_DIR": str(self.runtime_dir)}

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with the bus and without a display."""
        env = dict(os.environ if base is None else base)
        for name in DISPLAY_VARIABLES:
            env.pop(name, None)
        env.update(self.env)
        return env

    def default_collection(self) -> str:
        """The D-Bus path of the collection the `default` alias names ("/" when none)."""
        with self._connection() as connection:
            (path,) = _call(connection, SERVICE_INTERFACE, "ReadAlias", "s", ("default",))
        return str(path)

    def is_locked(self) -> bool:
        from jeepney import DBusAddress, Properties

        path = self.default_collection()
        collection = DBusAddress(path, SECRETS_NAME, "org.freedesktop.Secret.Collection")
        with self._connection() as connection:
            ((_, locked),) = _send(connection, Properties(collection).get("Locked"))
        return bool(locked)

    def lock(self) -> None:
        """Lock the default collection, as a screen lock does."""
        path = self.default_collection()
        with self._connection() as connection:
            _call(connection, SERVICE_INTERFACE, "Lock", "ao", ([path],))
        assert self.is_locked(), "gnome-keyring-daemon did not lock the default collection"

    def unlock(self) -> None:
        """Unlock the default collection with its password, as a login does."""
        path = self.default_collection()
        # A session lives as long as its connection: open and use it on one.
        with self._connection() as connection:
            (_, session) = _call(
                connection, SERVICE_INTERFACE, "OpenSession", "sv", ("plain", ("s", ""))
            )
            master = (session, b"", self._password.encode(), "text/plain")
            _call(
                connection, GNOME_INTERFACE, "UnlockWithMasterPassword", "o(oayays)", (path, master)
            )
        assert not self.is_locked(), "gnome-keyring-daemon did not unlock the default collection"

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        from jeepney.io.blocking import open_dbus_connection

        with closing(open_dbus_connection(self.address)) as connection:
            yield connection


def _call(
    connection: Any, interface: str, method: str, signature: str, body: tuple[Any, ...]
) -> tuple[Any, ...]:
    from jeepney import DBusAddress, new_method_call

    service = DBusAddress(SECRETS_PATH, SECRETS_NAME, interface)
    return _send(connection, new_method_call(service, method, signature, body))


def _send(connection: Any, message: Any) -> tuple[Any, ...]:
    from jeepney import MessageType

    reply = connection.send_and_get_reply(message, timeout=TIMEOUT)
    if reply.header.message_type == MessageType.error:
        raise RuntimeError(f"D-Bus error {reply.header.fields}: {reply.body}")
    return tuple(reply.body)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End `process` and anything in its process group (it leads one of its own)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            os.killpg(process.pid, signal.SIGCONT)  # a test may have stopped it (a hung service)
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()


def _start_bus(
    directory: Path, runtime_dir: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    config = directory / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=runtime_dir / "bus"))
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # it warns that it cannot raise its fd limit
        env=env,
        start_new_session=True,
    )
    assert bus.stdout is not None
    # It prints the address once it listens.
    address = bus.stdout.readline().decode().strip()
    bus.stdout.close()
    if not address:
        _stop(bus)
        raise RuntimeError(f"dbus-daemon exited ({bus.returncode}) without printing its address")
    return bus, address


def _wait_ready(service: SecretService, daemon: subprocess.Popen[bytes], log: Path) -> None:
    """Until the daemon owns its name and its default collection exists, unlocked."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if daemon.poll() is not None:
            raise RuntimeError(
                f"gnome-keyring-daemon exited ({daemon.returncode}): {log.read_text().strip()}"
            )
        try:
            if service.default_collection() != "/" and not service.is_locked():
                return
        except RuntimeError:
            pass  # not on the bus yet
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"gnome-keyring-daemon gave no unlocked default collection in {TIMEOUT} s: "
                f"{log.read_text().strip()}"
            )
        time.sleep(0.02)


@contextmanager
def secret_service(directory: Path) -> Iterator[SecretService]:
    """A private session bus and gnome-keyring-daemon (secrets component only) whose
    keyrings live under `directory`; the default collection is created and unlocked."""
    directory.mkdir(parents=True, exist_ok=True)
    home = directory / "home"
    # The bus socket's path must fit in 108 bytes, which a pytest tmp_path may not.
    runtime_dir = Path(tempfile.mkdtemp(prefix="anysync-bus-"))  # mode 0700
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime_dir),
        "XDG_DATA_HOME": str(home / "data"),  # the keyrings: $XDG_DATA_HOME/keyrings
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, runtime_dir, ignore_errors=True)
        bus, address = _start_bus(directory, runtime_dir, env)
        stack.callback(_stop, bus)
        service = SecretService(address, runtime_dir, secrets.token_urlsafe(24), bus.pid)
        log = directory / "gnome-keyring-daemon.log"
        with log.open("wb") as log_file:
            # --unlock reads the password on stdin and creates the "login" collection
            # with it, which becomes the default alias.
            daemon = subprocess.Popen(
                ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=log_file,
                env={**env, "DBUS_SESSION_BUS_ADDRESS": address},
                start_new_session=True,
            )
        stack.callback(_stop, daemon)
        service.daemon_pid = daemon.pid
        assert daemon.stdin is not None
        daemon.stdin.write(service._password.encode())
        daemon.stdin.close()
        _wait_ready(service, daemon, log)
        yield service


@pytest.fixture
def keyring_service(tmp_path: Path) -> Iterator[SecretService]:
    """A real, unlocked Secret Service (see secret_service); skips, saying why, where
    it cannot run."""
    reason = secret_service_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with secret_service(tmp_path / "secret-service") as service:
        yield service
