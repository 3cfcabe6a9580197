"""The client's wrappers of the garbage-collection RPCs over a real gRPC connection: an
in-process Storage servicer (grpc.aio over TLS) that answers as the server does, and the
real Remote that turns its messages into domain types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from anysync import tls
from anysync.client import remote as remote_mod
from anysync.client.remote import PACK_CONDEMNED, PACK_LIVE, Remote
from anysync.server.app import LoopThread
from anysync.types import BlobId, BlobLocation, PackId
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc

HISTORY = [
    pb.RefVersion(
        name=f"r-{i % 2}",
        version=i // 2 + 1,
        commit_id=bytes([i]) * 32,
        seq=i + 1,
        device_id=7,
        by_manage=i % 3 == 0,
        at=1000 + i,
    )
    for i in range(7)
]
PACK_A, PACK_B = b"\xaa" * 16, b"\xbb" * 16


class Storage(pb_grpc.StorageServicer):
    """Counters as one account at gc_generation 4 and ref_seq 7 has them."""

    def __init__(self) -> None:
        self.history_calls: list[tuple[int, int]] = []
        self.last_update: pb.UpdateRefRequest | None = None

    async def FindBlobs(
        self, request: pb.FindBlobsRequest, context: object
    ) -> pb.FindBlobsResponse:
        found = [
            pb.BlobLocation(blob_id=b, pack_id=PACK_A, offset=0, length=10)
            for b in request.blob_ids
            if b[0] == 1
        ]
        return pb.FindBlobsResponse(found=found, gc_generation=4)

    async def ListRefHistory(
        self, request: pb.ListRefHistoryRequest, context: object
    ) -> pb.ListRefHistoryResponse:
        self.history_calls.append((request.after_seq, request.limit))
        after = [
            v for v in HISTORY if v.seq > request.after_seq and v.name.startswith(request.name)
        ]
        return pb.ListRefHistoryResponse(versions=after[: request.limit], ref_seq=7)

    async def ListPacks(
        self, request: pb.ListPacksRequest, context: object
    ) -> AsyncIterator[pb.ListPacksResponse]:
        entries = [pb.PackEntry(blob_id=b"\x01" * 32, offset=5, length=9)]
        live = pb.PackInfo(
            pack_id=PACK_A,
            size=100,
            charged=4096,
            created_at=50,
            state=pb.PACK_LIVE,
            entries=entries if request.include_entries else [],
        )
        condemned = pb.PackInfo(
            pack_id=PACK_B, size=10, charged=4096, state=pb.PACK_CONDEMNED, condemned_at=60
        )
        yield pb.ListPacksResponse(gc_generation=4, ref_seq=7, packs=[live])
        if request.include_condemned:
            yield pb.ListPacksResponse(gc_generation=4, ref_seq=7, packs=[condemned])

    async def UpdateRef(self, request: pb.UpdateRefRequest, context: object) -> pb.Ref:
        self.last_update = request
        return pb.Ref(name=request.name, commit_id=request.commit_id, version=1)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Remote, Storage]]:
    key, cert = tls.generate_self_signed(["127.0.0.1"])
    loop = LoopThread()
    storage = Storage()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_StorageServicer_to_server(storage, server)
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
        await server.start()
        return server, port

    server, port = loop.call(start())
    remote = Remote(f"127.0.0.1:{port}", cert)
    yield remote, storage
    remote.close()
    loop.call(server.stop(None))
    loop.close()


def test_find_blobs_at_returns_the_generation_even_for_no_ids(
    served: tuple[Remote, Storage],
) -> None:
    remote, _ = served
    held, other = BlobId(b"\x01" * 32), BlobId(b"\x02" * 32)
    found, generation = remote.find_blobs_at([held, other])
    assert found == {held: BlobLocation(held, PackId(PACK_A), 0, 10)} and generation == 4
    assert remote.find_blobs_at([]) == ({}, 4)
    assert remote.find_blobs([]) == {}  # the plain call still asks nothing for nothing


def test_update_ref_sends_the_generation_only_when_given(served: tuple[Remote, Storage]) -> None:
    remote, storage = served
    commit = BlobId(b"\x03" * 32)
    remote.update_ref("r-a", 0, commit, gc_generation=0)
    assert storage.last_update is not None and storage.last_update.HasField("gc_generation")
    assert storage.last_update.gc_generation == 0  # 0 is sent, not taken for "absent"
    remote.update_ref("r-a", 0, commit)
    assert not storage.last_update.HasField("gc_generation")


def test_ref_history_is_read_page_by_page(
    served: tuple[Remote, Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    remote, storage = served
    monkeypatch.setattr(remote_mod, "HISTORY_PAGE", 3)
    storage.history_calls.clear()
    versions, ref_seq = remote.list_ref_history()
    assert [v.seq for v in versions] == [1, 2, 3, 4, 5, 6, 7] and ref_seq == 7
    assert storage.history_calls == [(0, 3), (3, 3), (6, 3)]
    first = versions[0]
    assert (first.name, first.version, first.commit_id, first.device_id, first.by_manage) == (
        "r-0",
        1,
        BlobId(b"\x00" * 32),
        7,
        True,
    )
    only_one, _ = remote.list_ref_history("r-1", after_seq=2)
    assert [(v.name, v.seq) for v in only_one] == [("r-1", 4), ("r-1", 6)]


def test_list_packs_joins_the_stream_and_keeps_the_counters(
    served: tuple[Remote, Storage],
) -> None:
    remote, _ = served
    bare = remote.list_packs(include_entries=False)
    assert (bare.gc_generation, bare.ref_seq) == (4, 7)
    assert [(p.pack_id, p.state, p.entries) for p in bare.packs] == [
        (PackId(PACK_A), PACK_LIVE, ())
    ]
    full = remote.list_packs(include_entries=True, include_condemned=True)
    live, condemned = full.packs
    blob = BlobId(b"\x01" * 32)
    assert live.entries == (BlobLocation(blob, PackId(PACK_A), 5, 9),)
    assert (live.size, live.charged, live.created_at) == (100, 4096, 50)
    assert (condemned.state, condemned.condemned_at) == (PACK_CONDEMNED, 60)
