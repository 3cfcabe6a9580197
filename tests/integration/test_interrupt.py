"""Ctrl-C while a transfer hangs on a silent network (issue 11, trust case 7).

A StallProxy sits where the packs travel: in front of the anysync-server (local store:
packs go through the server's gRPC stream) or in front of the S3 store (packs go there
directly by presigned URL; the server's `public_endpoint` names the proxy). Once the
proxy holds bytes back, the client is blocked in a send or a receive; SIGINT must end it
with exit 130 while the proxy is still stalled, and leave a repository the next backup
builds on.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import CLIENT, Client, Server, base_env
from tests.integration.stall_proxy import StallProxy

MIB = 1024 * 1024
# Four packs of about 16 MiB; the upload stalls in the third, after two are stored.
DATA_MIB = 64
UP_BUDGET = 40 * MIB
DOWN_BUDGET = 8 * MIB
SAFETY_NET = 30.0  # a hang shows as a timeout here; the measured time goes to the log


@dataclass
class Setup:
    server: Server
    proxy: StallProxy
    client: Client


@pytest.fixture(params=["local", "s3"])
def stalled_path(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Setup]:
    """A server and a signed-up client whose pack transfers go through a StallProxy."""
    server = Server(tmp_path / "server-home")
    server.admin("init")
    client = Client(tmp_path / "device")
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        host, port = s3.endpoint.removeprefix("http://").split(":")
        proxy = StallProxy(host, int(port))
        server.use_s3(s3, f"b{uuid.uuid4().hex[:16]}")
        config = (server.home / "server.toml").read_text()
        (server.home / "server.toml").write_text(
            config.replace('kind = "s3"\n', f'kind = "s3"\npublic_endpoint = "{proxy.endpoint}"\n')
        )
        server.start()
        address = server.address
    else:
        server.start()
        proxy = StallProxy("127.0.0.1", server.port)
        address = proxy.address
    try:
        # The proxy is transparent at the TCP level: the pinned certificate still verifies.
        client.run(
            "signup", "--server", address, "--email", "me@example.org",
            "--invite", server.invite(), "--fingerprint", server.fingerprint(),
        )  # fmt: skip
        yield Setup(server, proxy, client)
    finally:
        proxy.close()
        server.stop()


def _big_folder(root: Path, mib: int = DATA_MIB) -> Path:
    root.mkdir()
    (root / "big.bin").write_bytes(random.Random(11).randbytes(mib * MIB))
    (root / "small.txt").write_text("small\n")
    return root


def _interrupt_when_stalled(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI until the proxy stalls it, then SIGINT; the process must end while the
    proxy still holds its bytes back."""
    env = base_env() | {
        "ANYSYNC_HOME": str(setup.client.home),
        "ANYSYNC_PASSWORD": setup.client.password,
    }
    proc = subprocess.Popen(
        [CLIENT, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stalled = setup.proxy.stalled.wait(timeout=120)  # a safety net, not a measure
        assert stalled, f"the proxy never stalled `anysync {' '.join(args)}`"
        assert proc.poll() is None, "the command ended before the stall"
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=SAFETY_NET)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"`anysync {' '.join(args)}` still running {SAFETY_NET} s after SIGINT"
            ) from None
        print(f"anysync {args[0]} exited {time.monotonic() - interrupted_at:.2f} s after SIGINT")
        assert setup.proxy.stalled.is_set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)
    assert stderr.strip().splitlines() == ["anysync: interrupted"], stderr
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def _backup_json(client: Client, src: Path) -> dict[str, int]:
    doc: dict[str, int] = json.loads(client.run("backup", str(src), "--json").stdout)
    return doc


def test_ctrl_c_during_a_stalled_backup_exits_130(stalled_path: Setup, tmp_path: Path) -> None:
    src = _big_folder(tmp_path / "Docs")
    stalled_path.proxy.stall_after(up=UP_BUDGET)
    _interrupt_when_stalled(stalled_path, "backup", str(src))

    stalled_path.proxy.release()
    rerun = _backup_json(stalled_path.client, src)
    # The packs stored before the stall are found and not sent again.
    assert 0 < rerun["bytes_added"] < rerun["bytes"] - UP_BUDGET // 2, rerun
    restored = tmp_path / "restored"
    stalled_path.client.run("restore", "latest", "--target", str(restored))
    assert (restored / "Docs" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_ctrl_c_during_a_stalled_restore_exits_130(stalled_path: Setup, tmp_path: Path) -> None:
    # Larger than restore's batch (32 MiB): read on the prefetch thread (Repository.stream).
    src = _big_folder(tmp_path / "Docs", mib=48)
    _backup_json(stalled_path.client, src)
    stalled_path.proxy.stall_after(down=DOWN_BUDGET)
    _interrupt_when_stalled(stalled_path, "restore", "latest", "--target", str(tmp_path / "out"))


def test_ctrl_c_during_a_stalled_sync_pass_exits_130(stalled_path: Setup, tmp_path: Path) -> None:
    folder = _big_folder(tmp_path / "Shared", mib=32)
    stalled_path.client.run("sync", "add", str(folder), "--name", "Shared")
    stalled_path.proxy.stall_after(up=8 * MIB)
    _interrupt_when_stalled(stalled_path, "sync", "run")

    stalled_path.proxy.release()
    stalled_path.client.run("sync", "run")
