"""The tools under test, one class each, with the same interface.

Each round gets fresh repositories: `init_repo(root)` makes one under `root` (for
AnySync: a new anysync-server home, a running server on loopback and a signed-up
client). `backup(source)` snapshots a directory; `restore(source, target, include)`
restores the latest snapshot of `source` (or the one path `include`, spelled like
"D1/dir/file") and returns the directory of the restored tree that corresponds to
`source.parent`. Passwords travel in environment variables, never in argv.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

import psutil

from bench.measure import Runner, tree_bytes

PASSWORD = "bench-password-not-secret"
BIN = Path(sys.executable).parent


def base_env() -> dict[str, str]:
    """The caller's environment without any tool's settings (no weakened KDF either)."""
    drop = ("ANYSYNC_", "RESTIC_", "BORG_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tool(ABC):
    name: str

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.root = Path()

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def init_repo(self, root: Path) -> None: ...

    @abstractmethod
    def backup(self, source: Path) -> dict[str, object]:
        """Back up `source`; returns what the tool reports about it."""

    @abstractmethod
    def restore(self, source: Path, target: Path, include: str | None = None) -> Path: ...

    @abstractmethod
    def repo_bytes(self) -> int: ...

    def cache_bytes(self) -> int:
        """Client-side state kept between runs (caches, local databases)."""
        return 0

    def watched(self) -> list[psutil.Process]:
        """Long-lived processes whose CPU and memory count towards every step."""
        return []

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Stop whatever init_repo started."""

    def _run(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
        return self.runner.run(argv, env, cwd, label=f"{self.name}-{argv[1]}")


class AnySync(Tool):
    name = "anysync"

    def __init__(self, runner: Runner, code: Path | None = None, commit: str = "") -> None:
        """code: a source tree (its src/ directory) to run instead of the installed one."""
        super().__init__(runner)
        self.code = code
        self.commit = commit
        self.server_exe = str(BIN / "anysync-server")
        self.client_exe = str(BIN / "anysync")
        self.proc: subprocess.Popen[bytes] | None = None
        self.snapshots: dict[Path, str] = {}

    @property
    def server_home(self) -> Path:
        return self.root / "server"

    @property
    def env(self) -> dict[str, str]:
        return base_env() | ({"PYTHONPATH": str(self.code)} if self.code else {})

    @property
    def client_env(self) -> dict[str, str]:
        return self.env | {
            "ANYSYNC_HOME": str(self.root / "client"),
            "ANYSYNC_PASSWORD": PASSWORD,
        }

    def version(self) -> str:
        v = subprocess.run(
            [self.client_exe, "--version"], capture_output=True, text=True, env=self.env
        )
        if self.commit:
            return f"{v.stdout.strip()} (snapshot of commit {self.commit[:12]})"
        git = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        )
        return f"{v.stdout.strip()} (git {git.stdout.strip() or 'unknown'})"

    def _admin(self, *args: str) -> str:
        return self.runner.run(
            [self.server_exe, "--home", str(self.server_home), *args],
            self.env,
            label=f"anysync-server-{args[0]}",
        ).strip()

    def init_repo(self, root: Path) -> None:
        self.root = root
        self.snapshots = {}
        root.mkdir(parents=True, exist_ok=True)
        self._admin("init")
        address = f"127.0.0.1:{free_port()}"
        with open(root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.server_exe, "--home", str(self.server_home), "run", "--listen", address],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anysync-server exited early; see {root / 'server.log'}")
            probe = subprocess.run(
                [self.server_exe, "--home", str(self.server_home), "health", "--address", address],
                env=self.env,
                capture_output=True,
            )
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("anysync-server did not become healthy in 60 s")
            time.sleep(0.2)
        invite = self._admin("invite", "create")
        fingerprint = self._admin("fingerprint")
        self._run(
            [
                self.client_exe,
                "signup",
                "--server",
                address,
                "--email",
                "bench@example.com",
                "--invite",
                invite,
                "--fingerprint",
                fingerprint,
            ],
            self.client_env,
        )

    def backup(self, source: Path) -> dict[str, object]:
        out = self._run([self.client_exe, "backup", "--json", str(source)], self.client_env)
        doc: dict[str, object] = json.loads(out)
        self.snapshots[source] = str(doc["snapshot"])
        return doc

    def restore(self, source: Path, target: Path, include: str | None = None) -> Path:
        argv = [self.client_exe, "restore", self.snapshots[source], "--target", str(target)]
        self._run([*argv, "--include", include] if include else argv, self.client_env)
        return target

    def server_rss(self) -> int:
        """The running server's resident memory now, after a moment's rest."""
        assert self.proc is not None, "init_repo first"
        time.sleep(2)
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def command_start_s(self, runs: int = 10) -> float:
        """Median wall time of `anysync snapshots` against this idle server (the cost of
        starting a command: imports, the key file, TLS, one listing)."""
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._run([self.client_exe, "snapshots"], self.client_env)
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls)

    def repo_bytes(self) -> int:
        db = self.server_home / "metadata.db"
        parts = [db, db.with_name("metadata.db-wal"), self.server_home / "objects"]
        return tree_bytes(*(p for p in parts if p.exists()))

    def cache_bytes(self) -> int:
        return tree_bytes(self.root / "client")

    def watched(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid)] if self.proc else []

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Restic(Tool):
    """restic on a local repository; format v2 with `--compression auto` (zstd)."""

    name = "restic"

    def __init__(self, runner: Runner, exe: str = "restic") -> None:
        super().__init__(runner)
        self.exe = exe
        self.snapshots: dict[Path, str] = {}

    @property
    def env(self) -> dict[str, str]:
        return base_env() | {
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(self.root / "repo"),
            "RESTIC_CACHE_DIR": str(self.root / "cache"),
        }

    def version(self) -> str:
        return subprocess.run([self.exe, "version"], capture_output=True, text=True).stdout.strip()

    def init_repo(self, root: Path) -> None:
        self.root = root
        self.snapshots = {}
        root.mkdir(parents=True, exist_ok=True)
        self._run([self.exe, "init", "--repository-version", "2"], self.env)

    def backup(self, source: Path) -> dict[str, object]:
        argv = [self.exe, "backup", "--json", "--compression", "auto", "--host", "bench"]
        out = self._run([*argv, str(source)], self.env, cwd=source.parent)
        summary: dict[str, object] = {}
        for line in out.splitlines():
            if line.startswith("{") and '"summary"' in line:
                summary = json.loads(line)
        self.snapshots[source] = str(summary["snapshot_id"])
        return summary

    def restore(self, source: Path, target: Path, include: str | None = None) -> Path:
        argv = [self.exe, "restore", self.snapshots[source], "--target", str(target)]
        if include:
            argv += ["--include", str(source.parent / include)]
        self._run(argv, self.env)
        return target / source.parent.relative_to("/")

    def repo_bytes(self) -> int:
        return tree_bytes(self.root / "repo")

    def cache_bytes(self) -> int:
        return tree_bytes(self.root / "cache")


class Borg(Tool):
    """borg 1.x on a local repository: repokey-blake2, zstd level 3."""

    def __init__(self, runner: Runner, exe: str, name: str) -> None:
        super().__init__(runner)
        self.exe = exe
        self.name = name
        self.archives: dict[Path, str] = {}
        self._count = 0

    @property
    def env(self) -> dict[str, str]:
        return base_env() | {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_REPO": str(self.root / "repo"),
            "BORG_BASE_DIR": str(self.root / "base"),
            "BORG_DISPLAY_PASSPHRASE": "no",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def version(self) -> str:
        out = subprocess.run([self.exe, "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def init_repo(self, root: Path) -> None:
        self.root = root
        self.archives = {}
        root.mkdir(parents=True, exist_ok=True)
        self._run([self.exe, "init", "--encryption=repokey-blake2"], self.env)

    def backup(self, source: Path) -> dict[str, object]:
        self._count += 1
        archive = f"{source.name}-{self._count}"
        self._run(
            [self.exe, "create", "--compression", "zstd,3", f"::{archive}", source.name],
            self.env,
            cwd=source.parent,
        )
        self.archives[source] = archive
        return {"archive": archive}

    def restore(self, source: Path, target: Path, include: str | None = None) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        argv = [self.exe, "extract", f"::{self.archives[source]}"]
        self._run([*argv, include] if include else argv, self.env, cwd=target)
        return target

    def repo_bytes(self) -> int:
        return tree_bytes(self.root / "repo")

    def cache_bytes(self) -> int:
        return tree_bytes(self.root / "base")
