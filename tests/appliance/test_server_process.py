"""What a supervisor relies on: a graceful stop that cuts uploads off cleanly, and a
`run` process that logs JSON lines to standard output and exits 0 on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from anysync.server.home import init_home
from anysync.server.metadata import Metadata
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc
from tests.appliance.conftest import InProcess, wait_for

MiB = 1 << 20


def test_stop_cuts_an_upload_off_cleanly(
    in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = in_process.signup()
    data = os.urandom(2 * MiB)
    header = pb.PackHeader(size=len(data), sha256=hashlib.sha256(data).digest())
    header.entries.append(pb.PackEntry(blob_id=b"\1" * 32, offset=0, length=len(data)))
    half_sent, release = threading.Event(), threading.Event()

    def messages() -> Iterator[pb.UploadPackRequest]:
        yield pb.UploadPackRequest(header=header)
        yield pb.UploadPackRequest(data=data[:MiB])
        half_sent.set()
        release.wait(20)  # the second half comes only after the server has stopped
        yield pb.UploadPackRequest(data=data[MiB:])

    storage = pb_grpc.StorageStub(in_process.channel)
    call = storage.UploadPack.future(messages(), metadata=md)
    assert half_sent.wait(10)
    metrics = in_process.running.metrics
    wait_for(lambda: metrics.in_flight == 1)

    # The handler is cancelled at the end of the grace period and finishes within the
    # drain: wait_idle() succeeds (it did not give up after DRAIN_SECONDS), before the
    # database closes.
    events: list[str] = []
    wait_idle, close = metrics.wait_idle, in_process.running.db.close

    def spy_wait_idle(timeout: float) -> bool:
        drained = wait_idle(timeout)
        events.append(f"drained={drained} in_flight={metrics.in_flight}")
        return drained

    def spy_close() -> None:
        events.append("db closed")
        close()

    monkeypatch.setattr(metrics, "wait_idle", spy_wait_idle)
    monkeypatch.setattr(in_process.running.db, "close", spy_close)
    in_process.stop(grace=0.5)
    assert events == ["drained=True in_flight=0", "db closed"]
    release.set()
    try:
        call.result(timeout=10)
        raise AssertionError("the upload was not cut off")
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)

    # Nothing half-written anywhere: no pack recorded or counted, no file stored.
    db = Metadata.open(in_process.home.metadata_db)
    try:
        [user] = db.list_users()
        assert user.used_bytes == 0
    finally:
        db.close()
    stored = [p for p in (in_process.home.root / "objects").rglob("*") if p.is_file()]
    assert stored == []


def test_stop_waits_for_a_handler_inside_the_database(
    in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC cancels calls after the grace period but cannot stop their threads: the
    database must stay open until the handler is done, so a pack is recorded whole."""
    md = in_process.signup()
    data = os.urandom(MiB)
    header = pb.PackHeader(size=len(data), sha256=hashlib.sha256(data).digest())
    header.entries.append(pb.PackEntry(blob_id=b"\1" * 32, offset=0, length=len(data)))
    db = in_process.running.core.db
    add_pack, close = db.add_pack, db.close
    inside, cancelled = threading.Event(), threading.Event()
    events: list[str] = []

    def slow_add_pack(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        # Still busy when the 0.2 s grace period has ended and gRPC has cancelled the call.
        events.append(f"cancelled while inside={cancelled.wait(30)}")
        result = add_pack(*args, **kwargs)
        events.append("pack recorded")
        return result

    def spy_close() -> None:
        events.append("db closed")
        close()

    monkeypatch.setattr(db, "add_pack", slow_add_pack)
    monkeypatch.setattr(db, "close", spy_close)
    storage = pb_grpc.StorageStub(in_process.channel)
    messages = [pb.UploadPackRequest(header=header), pb.UploadPackRequest(data=data)]
    call = storage.UploadPack.future(iter(messages), metadata=md)
    call.add_done_callback(lambda _: cancelled.set())
    assert inside.wait(10)

    in_process.stop(grace=0.2)
    # It waited for the handler: the database closed only after the pack was recorded.
    assert events == ["cancelled while inside=True", "pack recorded", "db closed"]
    assert in_process.running.metrics.in_flight == 0
    with pytest.raises(grpc.RpcError):
        call.result(timeout=10)  # cancelled: the client will send it again

    check = Metadata.open(in_process.home.metadata_db)
    try:
        [user] = check.list_users()
    finally:
        check.close()
    stored = [p for p in (in_process.home.root / "objects").rglob("*") if p.is_file()]
    assert (user.used_bytes, len(stored)) == (MiB, 1)  # recorded and stored, not half


def test_run_logs_json_lines_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home")
    text = home.config_file.read_text()
    text = text.replace('format = "text"', 'format = "json"')
    text = text.replace('listen = "127.0.0.1:9465"', 'listen = "127.0.0.1:0"')
    home.config_file.write_text(text)
    cli = [sys.executable, "-m", "anysync.server.cli", "--home", str(home.root)]
    proc = subprocess.Popen(
        [*cli, "run", "--listen", "127.0.0.1:0"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        records = []
        metrics_url = ""
        deadline = time.monotonic() + 30
        while not metrics_url:
            assert time.monotonic() < deadline, records
            records.append(json.loads(proc.stdout.readline()))
            m = re.fullmatch(r"metrics at (http://\S+)", records[-1]["message"])
            metrics_url = m.group(1) if m else ""
        listening = next(r for r in records if r["message"] == "listening")
        assert re.fullmatch(r"127\.0\.0\.1:\d+", listening["address"])
        assert re.fullmatch(r"[0-9a-f]{64}", listening["fingerprint"])
        with urllib.request.urlopen(metrics_url, timeout=5) as reply:
            assert b"anysync_up 1\n" in reply.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert err == ""
    rest = [json.loads(line) for line in out.splitlines()]  # every line one JSON object
    messages = [r["message"] for r in rest]
    assert "SIGTERM received; stopping" in messages
    assert messages[-1] == "stopped"


def test_sigterm_while_waiting_for_the_store_stops_at_once(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens here once the socket closes
    (home.root / "s3.secret").write_text("secret")
    (home.root / "s3.secret").chmod(0o600)
    text = home.config_file.read_text().replace(
        'kind = "local"',
        f'kind = "s3"\nendpoint = "http://127.0.0.1:{closed_port}"\nbucket = "anysync"\n'
        'access_key = "k"\nsecret_key_file = "s3.secret"',
    )
    home.config_file.write_text(text.replace('listen = "127.0.0.1:9465"', 'listen = ""'))
    cli = [sys.executable, "-m", "anysync.server.cli", "--home", str(home.root)]
    proc = subprocess.Popen(
        [*cli, "run", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the server is retrying the store
            if " retry 1 in " in line:
                break
        else:
            raise AssertionError("the server never retried the store")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    # It did not wait for the store's retries: none after the signal, and no giving up.
    lines = out.splitlines()
    [signalled] = [i for i, line in enumerate(lines) if "SIGTERM received; stopping" in line]
    after = lines[signalled + 1 :]
    assert [line for line in after if " retry " in line or "gave up" in line] == [], out
    assert any(line.endswith(": stopped before serving") for line in after), out
