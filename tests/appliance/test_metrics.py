"""server/metrics.py: RPC outcomes, pack bytes and account gauges, scraped over HTTP."""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from anysync.server.metrics import CONTENT_TYPE, MetricsHttpServer
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc
from tests.appliance.conftest import InProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_SAMPLE = re.compile(r"([a-z_]+)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Exposition format 0.0.4 → samples and each family's TYPE."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.fullmatch(line)
            assert m, line
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"] == CONTENT_TYPE
        return parse(reply.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def endpoint(in_process: InProcess) -> Iterator[str]:
    http = MetricsHttpServer(in_process.running.metrics, "127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        http.close()


def test_counts_requests_errors_and_bytes(
    in_process: InProcess, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples, types = scrape(f"{endpoint}/metrics")
    assert value(samples, "anysync_up") == 1
    assert value(samples, "anysync_users") == 0
    assert types["anysync_requests_total"] == "counter"
    assert types["anysync_users"] == "gauge"

    health = health_pb2_grpc.HealthStub(in_process.channel)
    health.Check(health_pb2.HealthCheckRequest(service=""))
    md = in_process.signup()
    storage = pb_grpc.StorageStub(in_process.channel)

    data = b"x" * 5000
    header = pb.PackHeader(size=len(data), sha256=hashlib.sha256(data).digest())
    header.entries.append(pb.PackEntry(blob_id=b"\1" * 32, offset=0, length=len(data)))
    messages = [pb.UploadPackRequest(header=header), pb.UploadPackRequest(data=data)]
    pack_id = storage.UploadPack(iter(messages), metadata=md).pack_id  # client streaming
    pieces = storage.ReadPack(
        pb.ReadPackRequest(pack_id=pack_id, offset=10, length=100), metadata=md
    )
    assert sum(len(p.data) for p in pieces) == 100  # server streaming
    with pytest.raises(grpc.RpcError):
        storage.GetRef(pb.GetRefRequest(name="nope"), metadata=md)  # NOT_FOUND: no fault
    with pytest.raises(grpc.RpcError):
        storage.FindBlobs(pb.FindBlobsRequest(blob_ids=[b"short"]), metadata=md)

    def boom(*args: object) -> object:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(in_process.running.core.db, "find_blobs", boom)
    with pytest.raises(grpc.RpcError) as info:
        storage.FindBlobs(pb.FindBlobsRequest(blob_ids=[b"\2" * 32]), metadata=md)
    assert info.value.code() == grpc.StatusCode.INTERNAL

    samples, _ = scrape(f"{endpoint}/metrics")
    requests = "anysync_requests_total"
    assert value(samples, requests, method="/grpc.health.v1.Health/Check", code="OK") == 1
    assert value(samples, requests, method="/anysync.v1.Accounts/Signup", code="OK") == 1
    assert value(samples, requests, method="/anysync.v1.Storage/UploadPack", code="OK") == 1
    assert value(samples, requests, method="/anysync.v1.Storage/ReadPack", code="OK") == 1
    assert value(samples, requests, method="/anysync.v1.Storage/GetRef", code="NOT_FOUND") == 1
    find = "/anysync.v1.Storage/FindBlobs"
    assert value(samples, requests, method=find, code="INVALID_ARGUMENT") == 1
    assert value(samples, requests, method=find, code="INTERNAL") == 1
    # Only the server's own failure is an error; the client's mistakes are not.
    assert value(samples, "anysync_errors_total", method=find) == 1
    assert value(samples, "anysync_errors_total", method="/anysync.v1.Storage/GetRef") == 0
    assert value(samples, "anysync_bytes_total", direction="in") == 5000
    assert value(samples, "anysync_bytes_total", direction="out") == 100
    assert value(samples, "anysync_requests_in_flight") == 0
    assert value(samples, "anysync_users") == 1
    assert value(samples, "anysync_stored_bytes") == 5000


def test_only_metrics_is_served(endpoint: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{endpoint}/", timeout=5)
    info.value.close()  # an HTTPError holds the connection open
    assert info.value.code == 404


def test_label_values_are_escaped(in_process: InProcess) -> None:
    metrics = in_process.running.metrics
    metrics.started()
    metrics.finished('/odd\\"method\n', grpc.StatusCode.OK)
    samples, _ = parse(metrics.render())
    assert value(samples, "anysync_requests_total", method='/odd\\\\\\"method\\n', code="OK") == 1
