"""Real processes for integration tests: an anysync-server and CLI clients."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anysync import tls
from anysync.client.home import ClientHome
from anysync.server import packs
from anysync.store import S3Store
from anysync.types import PackId
from tests import s3server
from tests.ports import free_port
from tests.s3server import S3Server

BIN = Path(sys.executable).parent
SERVER = str(BIN / "anysync-server")
CLIENT = str(BIN / "anysync")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSYNC_")}
    env["ANYSYNC_TESTONLY_WEAKEN_KDF"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    home: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    s3: S3Server | None = None  # set when the server stores packs in S3
    bucket: str = ""
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the process
    # `run --gc-grace/--gc-min-pack-age`: tests delete condemned packs at once and may
    # condemn packs just uploaded; a test of the grace period passes e.g. gc_grace="24h".
    gc_grace: str = "0s"
    gc_min_pack_age: str = "0s"

    def use_s3(self, s3: S3Server, bucket: str) -> None:
        """Point an initialised (not running) server at a bucket of a real S3 server."""
        self.s3, self.bucket = s3, bucket
        (self.home / "s3.secret").write_text(s3server.SECRET_KEY)
        (self.home / "s3.secret").chmod(0o600)
        config = (self.home / "server.toml").read_text()
        config = config.replace(
            'kind = "local"',
            f'kind = "s3"\nendpoint = "{s3.endpoint}"\nbucket = "{bucket}"\n'
            f'access_key = "{s3server.ACCESS_KEY}"\nsecret_key_file = "s3.secret"',
        )
        (self.home / "server.toml").write_text(config)

    def _object_key(self, pack_id: bytes) -> str:
        with sqlite3.connect(self.home / "metadata.db") as db:
            (user_id,) = db.execute(
                "SELECT u.user_id FROM packs p JOIN users u ON u.id = p.user WHERE p.pack_id = ?",
                (pack_id,),
            ).fetchone()
        return packs.pack_key((self.home / "server.secret").read_bytes(), user_id, PackId(pack_id))

    def read_object(self, pack_id: bytes) -> bytes:
        key = self._object_key(pack_id)
        if self.s3 is None:
            return (self.home / "objects" / key).read_bytes()
        return b"".join(self._s3_store().get_range(key))

    def write_object(self, pack_id: bytes, data: bytes) -> None:
        key = self._object_key(pack_id)
        if self.s3 is None:
            (self.home / "objects" / key).write_bytes(data)
        else:
            self._s3_store().put(key, io.BytesIO(data), len(data))

    def delete_object(self, pack_id: bytes) -> str:
        """Lose a pack's object, as a failing disk would; returns its store key."""
        key = self._object_key(pack_id)
        if self.s3 is None:
            (self.home / "objects" / key).unlink()
        else:
            self._s3_store().delete(key)
        return key

    def _s3_store(self) -> S3Store:
        assert self.s3 is not None
        return S3Store(self.s3.endpoint, self.bucket, s3server.ACCESS_KEY, s3server.SECRET_KEY)

    def stored_pack_bytes(self) -> int:
        """Bytes of pack objects on disk (the local store)."""
        return sum(p.stat().st_size for p in (self.home / "objects").rglob("*") if p.is_file())

    def stored_files(self) -> list[Path]:
        """Every file that holds this server's state, the object store's included."""
        roots = [self.home] + ([self.s3.data] if self.s3 else [])
        return [p for root in roots for p in root.rglob("*") if p.is_file()]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SERVER, "--home", str(self.home), *args],
            env=base_env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def _log_path(self) -> Path:
        return self.home.parent / f"{self.home.name}-server.log"

    def start(self) -> None:
        self.log = self._log_path()
        offset = self.log.stat().st_size if self.log.exists() else 0  # earlier runs' lines
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(SERVER, "--home", str(self.home), "run", "--listen", self.address),
                    *("--gc-grace", self.gc_grace, "--gc-min-pack-age", self.gc_min_pack_age),
                ],
                env=base_env() | self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # The server prints this line once it accepts connections (app.serve).
        ready = f"listening on {self.address}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            if ready in self.log.read_bytes()[offset:].decode(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def with_metrics(self) -> str:
        """Restart with the metrics endpoint on a free port; returns its URL."""
        self.stop()
        config = (self.home / "server.toml").read_text()
        assert config.count('listen = "127.0.0.1:9465"') == 1
        (self.home / "server.toml").write_text(
            config.replace('listen = "127.0.0.1:9465"', 'listen = "127.0.0.1:0"')
        )
        # Only this start's lines: an earlier start announced the default port, and the new
        # line comes just after "listening" (reading the whole log raced it, now and then).
        log = self._log_path()
        offset = log.stat().st_size if log.exists() else 0
        self.start()
        deadline = time.monotonic() + 60
        while not (
            found := re.findall(r"metrics at (http://\S+/metrics)", self._log_since(offset))
        ):
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        return str(found[-1])

    def _log_since(self, offset: int) -> str:
        assert self.log is not None
        return self.log.read_bytes()[offset:].decode(errors="replace")

    def fingerprint(self) -> str:
        return tls.fingerprint((self.home / "tls" / "server.crt").read_bytes())

    def invite(self) -> str:
        return self.admin("invite", "create").stdout.strip()


# The commands that take the account password (and run scrypt on it).
PASSWORD_COMMANDS = frozenset({"signup", "login", "passwd", "keys"})


@dataclass
class Client:
    """One device: its own ANYSYNC_HOME, driving the real CLI."""

    home: Path
    password: str = "correct horse battery staple"

    def run(
        self,
        *args: str,
        check: bool = True,
        password: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = base_env() | {"ANYSYNC_HOME": str(self.home)}
        if (args and args[0] in PASSWORD_COMMANDS) or password is not None:
            full_env["ANYSYNC_PASSWORD"] = password or self.password
        else:
            # Every other command opens device.keys: no password, and a scrypt would
            # kill it (docs/design.md §3, "The device key file").
            full_env["ANYSYNC_TESTONLY_FAULT"] = "crypto.scrypt"
        full_env |= env or {}
        proc = subprocess.run(
            [CLIENT, *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"anysync {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def snapshots(self) -> list[dict[str, Any]]:
        """`anysync snapshots --json`: oldest first."""
        out: list[dict[str, Any]] = json.loads(self.run("snapshots", "--json").stdout)
        return out

    @property
    def device_id(self) -> int:
        return int(ClientHome(self.home).config().device_id)

    def signup(self, server: Server, email: str) -> None:
        self.run(
            "signup", "--server", server.address, "--email", email,
            "--invite", server.invite(), "--fingerprint", server.fingerprint(),
        )  # fmt: skip

    def login(self, server: Server, email: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "login",
            "--server",
            server.address,
            "--email",
            email,
            "--fingerprint",
            server.fingerprint(),
        )


def make_tree(root: Path, small_files: int = 2000, big_mib: int = 20, seed: int = 7) -> None:
    """Nested dirs, Unicode names, a symlink, an empty file, a big random file, many small files."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    (root / "empty.txt").write_bytes(b"")
    (root / "big.bin").write_bytes(rnd.randbytes(big_mib * 1024 * 1024))
    uni = root / "Ünïcødé ☃ 目录"
    uni.mkdir()
    (uni / "żółć 🐍.txt").write_text("zażółć gęślą jaźń\n" * 50, encoding="utf-8")
    deep = root / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("deep\n")
    (root / "link-to-deep").symlink_to("a/b/c/d/deep.txt")
    (root / "dangling").symlink_to("does/not/exist")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    secret = root / "private.txt"
    secret.write_text("only me\n")
    secret.chmod(0o600)
    for i in range(small_files):
        d = root / "many" / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        body = f"file {i} " * rnd.randint(1, 200) + rnd.randbytes(rnd.randint(0, 3000)).hex()
        (d / f"f{i:05d}.txt").write_text(body)
    # Fixed, distinct mtimes (ns precision) to check they come back exactly.
    for n, p in enumerate(sorted(root.rglob("*"))):
        os.utime(
            p,
            ns=(
                1_600_000_000_000_000_000 + n * 1_000_001,
                1_600_000_000_000_000_000 + n * 1_000_001,
            ),
            follow_symlinks=False,
        )


def snapshot_of(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything restore must reproduce: type, bytes, mode, mtime, link target."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = p.lstat()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
        elif p.is_dir():
            out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
        else:
            out[rel] = ("file", p.read_bytes(), st.st_mode, st.st_mtime_ns)
    return out
