"""The direct data path to an S3 store, and the fallback through the server."""

from __future__ import annotations

import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import running_server
from tests.integration.harness import Client, Server


@pytest.fixture
def s3_only(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from running_server(tmp_path, request, "s3")


def _carried(metrics_url: str) -> tuple[int, int, int]:
    """What went through the server itself: (UploadPack calls, ReadPack calls, pack bytes
    sent). (Bytes "in" count packs recorded, direct uploads too, so they cannot tell.)"""
    with urllib.request.urlopen(metrics_url, timeout=30) as resp:
        text = resp.read().decode()

    def calls(method: str) -> int:
        pattern = (
            rf'^anysync_requests_total\{{method="/anysync.v1.Storage/{method}",code="\w+"\}} (\d+)$'
        )
        return sum(int(n) for n in re.findall(pattern, text, re.M))

    out = re.search(r'^anysync_bytes_total\{direction="out"\} (\d+)$', text, re.M)
    assert out is not None and "/anysync.v1.Storage/FindBlobs" in text, text
    return calls("UploadPack"), calls("ReadPack"), int(out.group(1))


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (src / "small.txt").write_text("small")
    return src


def test_packs_move_directly_between_client_and_store(
    s3_only: Server, device_a: Client, tmp_path: Path
) -> None:
    metrics = s3_only.with_metrics()
    src = _tree(tmp_path)
    device_a.signup(s3_only, "direct@example.org")
    out = device_a.run("-v", "backup", str(src))
    assert "directly to the object store" in out.stderr
    assert "through the server" not in out.stderr
    out = device_a.run("-v", "restore", "latest", "--target", str(tmp_path / "r"))
    assert "through the server" not in out.stderr
    assert (tmp_path / "r" / "Docs" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    # Not one pack went through the server, either way.
    assert _carried(metrics) == (0, 0, 0)

    # The same restore with the direct path turned off: now the server carries the packs,
    # so the metrics above would have seen a restore that did not go directly.
    env = {"ANYSYNC_DIRECT_STORE": "0"}
    device_a.run("restore", "latest", "--target", str(tmp_path / "r2"), env=env)
    assert (tmp_path / "r2" / "Docs" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    uploads, reads, sent = _carried(metrics)
    assert uploads == 0 and reads > 0 and sent >= 2 * 1024 * 1024


def test_unreachable_store_falls_back_to_the_server(
    s3_only: Server, device_a: Client, tmp_path: Path
) -> None:
    # Presigned URLs name an address the client cannot reach.
    s3_only.stop()
    config = (s3_only.home / "server.toml").read_text()
    unreachable = 'kind = "s3"\npublic_endpoint = "http://127.0.0.1:9"'
    (s3_only.home / "server.toml").write_text(config.replace('kind = "s3"', unreachable))
    s3_only.start()
    src = _tree(tmp_path)
    device_a.signup(s3_only, f"fallback-{uuid.uuid4().hex[:6]}@example.org")
    env = {"ANYSYNC_DIRECT_ATTEMPTS": "2"}
    out = device_a.run("backup", str(src), env=env)
    assert "cannot reach the object store directly" in out.stderr
    assert "through the server instead" in out.stderr
    device_a.run("restore", "latest", "--target", str(tmp_path / "r"), env=env)
    assert (tmp_path / "r" / "Docs" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
