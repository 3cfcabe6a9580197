"""The server's home directory: layout, creation (`init`) and loading.

~/.AnySync/               0700
  server.toml             settings (anysync.server.config)
  server.secret           32 random bytes, 0600: fake KDF salts, user prefixes
  tls/server.key          0600, EC P-256, made on first run
  tls/server.crt          self-signed; clients pin its SHA-256 fingerprint
  metadata.db             SQLite (WAL): accounts, devices, pack index, refs
  objects/                packs, when [storage] kind = "local"
  server.lock             0600, locked by the running server (Home.lock); holds its pid
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from anysync.errors import AnySyncError, UsageError
from anysync.server import config as config_mod
from anysync.server.config import ServerConfig
from anysync.server.metadata import Metadata

ENV_HOME = "ANYSYNC_SERVER_HOME"
SECRET_SIZE = 32


class HomeInUse(AnySyncError):
    """Another server process holds the home's lock."""


class HomeLock:
    """An exclusive flock(2) on the home's server.lock, held until `release` or the
    end of the process: the kernel drops it however the process ends (kill -9
    included), so a lock is never stale; the pid left in the file is only a hint."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the lock
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass(frozen=True, slots=True)
class Home:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "server.toml"

    @property
    def secret_file(self) -> Path:
        return self.root / "server.secret"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "server.key"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls" / "server.crt"

    @property
    def metadata_db(self) -> Path:
        return self.root / "metadata.db"

    @property
    def lock_file(self) -> Path:
        return self.root / "server.lock"

    def lock(self) -> HomeLock:
        """Take the home for this process, or raise HomeInUse naming the holder: two
        servers on one home would serve the same accounts beside each other. Admin
        commands do not lock: SQLite keeps their writes safe beside a server."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise HomeInUse(
                f"another anysync-server{pid} is running on {self.root}; stop it first"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return HomeLock(fd)

    def is_initialised(self) -> bool:
        return self.config_file.exists()

    def load_config(self) -> ServerConfig:
        return config_mod.load_config(self.config_file)

    def storage_dir(self, config: ServerConfig) -> Path:
        return self.root / config.storage_path  # an absolute storage_path wins

    def secret(self) -> bytes:
        data = self.secret_file.read_bytes()
        if len(data) != SECRET_SIZE:
            raise UsageError(f"{self.secret_file} is damaged (expected {SECRET_SIZE} bytes)")
        return data

    def cert_pem(self) -> bytes:
        return self.tls_cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.tls_key.read_bytes()

    def require_initialised(self) -> None:
        if not self.is_initialised():
            raise UsageError(
                f"{self.root} is not an AnySync server home; run `anysync-server init` first"
            )


def resolve_home(arg: str | None) -> Home:
    """--home, else $ANYSYNC_SERVER_HOME, else ~/.AnySync."""
    raw = arg or os.environ.get(ENV_HOME) or "~/.AnySync"
    return Home(Path(raw).expanduser().absolute())


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----"
)


def fingerprint(cert_pem: bytes) -> str:
    """anysync.tls.fingerprint (SHA-256 of the first certificate's DER) without
    cryptography: a PEM certificate is its DER in base64. The serving process never
    imports anysync.tls, whose cryptography.x509 took 2.3 MiB of its RSS (issue #15)."""
    found = _PEM_CERTIFICATE.search(cert_pem)
    if found is None:
        raise UsageError("the server's TLS certificate is not a PEM certificate")
    return hashlib.sha256(base64.b64decode(b"".join(found.group(1).split()))).hexdigest()


def init_home(root: Path) -> Home:
    """Create a new home with fresh secrets. An existing empty directory is accepted
    (a container volume is created empty); anything else that exists is refused."""
    home = Home(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} already exists and is not empty; refusing to overwrite it")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    (root / "tls").mkdir(mode=0o700)
    from anysync import tls  # here: see fingerprint()

    key_pem, cert_pem = tls.generate_self_signed(["localhost", "127.0.0.1", socket.gethostname()])
    _write_new(home.tls_key, key_pem, 0o600)
    _write_new(home.tls_cert, cert_pem, 0o644)
    _write_new(home.secret_file, os.urandom(SECRET_SIZE), 0o600)
    (root / "objects").mkdir(mode=0o700)
    _write_new(home.metadata_db, b"", 0o600)  # SQLite takes an empty file as a new DB
    Metadata.open(home.metadata_db).close()
    # Last: its presence marks the home as complete.
    _write_new(home.config_file, config_mod.TEMPLATE.encode(), 0o600)
    return home


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
