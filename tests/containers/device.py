"""A device running the real `anysync` client against a server in a container."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CLIENT = str(Path(sys.executable).parent / "anysync")


@dataclass
class Device:
    home: Path
    server: str  # HOST:PORT as published
    password: str = "correct horse battery staple"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # The real key derivation: the server in the image accepts nothing weaker.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSYNC_")}
        env |= {"ANYSYNC_HOME": str(self.home), "ANYSYNC_PASSWORD": self.password}
        proc = subprocess.run(
            [CLIENT, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"anysync {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def signup(self, email: str, invite: str, fingerprint: str) -> None:
        self.run(
            "signup", "--server", self.server, "--email", email,
            "--invite", invite, "--fingerprint", fingerprint,
        )  # fmt: skip

    def login(self, email: str, fingerprint: str) -> None:
        self.run("login", "--server", self.server, "--email", email, "--fingerprint", fingerprint)

    def backup(self, source: Path) -> subprocess.CompletedProcess[str]:
        return self.run("backup", str(source))

    def restore(self, target: Path) -> subprocess.CompletedProcess[str]:
        return self.run("restore", "latest", "--target", str(target))
