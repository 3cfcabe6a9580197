"""RepairIndex on the server (docs/prune-design.md §8, docs/protocol.md §7.10a): who may
call it, which packs and entries it takes, the fence on removals, and the charge. A real
Metadata on a temporary SQLite file and a real LocalStore."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from anysync.errors import AppendOnly, GcRaced, NeedsManage, NotFound, UsageError
from anysync.server.accounts import Caller
from anysync.server.metadata import MAX_PACK_ENTRIES, PACK_ENTRY_CHARGE, Metadata
from anysync.server.storage import EntryIn, Storage
from anysync.store import LocalStore
from anysync.types import PackId
from anysync.v1 import anysync_pb2 as pb
from tests.unit.test_server_gc import blob, counters, device, make, upload
from tests.unit.test_server_rpc import LIMITS, Served, _reason, _start
from tests.unit.test_server_storage import caller as new_account


@pytest.fixture(autouse=True)
def _weak_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSYNC_TESTONLY_WEAKEN_KDF", "1")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    db = Metadata.open(tmp_path / "metadata.db")
    yield db
    db.close()


@pytest.fixture
def storage(db: Metadata, tmp_path: Path) -> Storage:
    return make(db, LocalStore(tmp_path / "objects"), tmp_path)


def rows(storage: Storage, c: Caller, *blobs: bytes) -> list[tuple[bytes, int, int]]:
    """The live index rows of these blobs, as FindBlobs answers."""
    found = storage.find_blobs(c, list(blobs))
    return sorted((loc.blob_id.raw, loc.offset, loc.length) for loc in found.locations)


def test_only_an_effective_manage_device_repairs(db: Metadata, storage: Storage) -> None:
    alice = new_account(db)  # the sign-up device manages
    pack = upload(storage, alice, blob(1))
    header = [EntryIn(blob(1), 0, 1000)]

    with pytest.raises(AppendOnly):
        storage.repair_index(device(db, alice, "append"), pack.raw, header, 0)
    with pytest.raises(AppendOnly):  # elevation does not lift append-only
        storage.repair_index(
            device(db, alice, "append", int(time.time()) + 600), pack.raw, header, 0
        )
    with pytest.raises(NeedsManage, match="Elevate"):
        storage.repair_index(device(db, alice, "write"), pack.raw, header, 0)
    with pytest.raises(NeedsManage):  # an elevation that ran out
        storage.repair_index(device(db, alice, "write", int(time.time()) - 1), pack.raw, header, 0)
    elevated = device(db, alice, "write", int(time.time()) + 600)
    assert storage.repair_index(elevated, pack.raw, header, 0).added == 0


def test_only_a_live_pack_of_the_account_is_repaired(db: Metadata, storage: Storage) -> None:
    alice = new_account(db)
    bob = new_account(db, "b@example.org")
    mine = upload(storage, alice, blob(1))
    theirs = upload(storage, bob, blob(2))
    doomed = upload(storage, alice, blob(3))
    storage.condemn_packs(alice, [doomed.raw], *counters(db, alice))
    generation, _ = counters(db, alice)
    header = [EntryIn(blob(9), 0, 10)]

    with pytest.raises(NotFound, match="no pack"):
        storage.repair_index(alice, PackId.random().raw, header, generation)
    with pytest.raises(NotFound, match="no pack"):  # another account's: not even seen
        storage.repair_index(alice, theirs.raw, header, generation)
    with pytest.raises(NotFound, match="condemned"):
        storage.repair_index(alice, doomed.raw, header, generation)
    assert rows(storage, bob, blob(2), blob(9)) == [(blob(2), 0, 1000)]
    # Listed before the prune (generation 0): the listing is what is out of date.
    with pytest.raises(GcRaced, match="list the packs again"):
        storage.repair_index(alice, doomed.raw, header, 0)
    with pytest.raises(GcRaced):
        storage.repair_index(alice, PackId.random().raw, header, 0)
    assert storage.repair_index(alice, mine.raw, [*header, EntryIn(blob(1), 0, 1000)], 1).added


def test_entries_must_lie_inside_the_pack_and_be_few_enough(db: Metadata, storage: Storage) -> None:
    alice = new_account(db)
    pack = upload(storage, alice, blob(1), size=1000)
    for bad in (EntryIn(blob(2), 900, 101), EntryIn(blob(2), 0, 0), EntryIn(blob(2), 1000, 1)):
        with pytest.raises(UsageError, match="inside the pack"):
            storage.repair_index(alice, pack.raw, [bad], 0)
    with pytest.raises(UsageError, match="blob ID"):
        storage.repair_index(alice, pack.raw, [EntryIn(b"short", 0, 10)], 0)
    with pytest.raises(UsageError, match="pack ID"):
        storage.repair_index(alice, b"short", [], 0)
    too_many = [EntryIn(i.to_bytes(32, "big"), 0, 1) for i in range(MAX_PACK_ENTRIES + 1)]
    with pytest.raises(UsageError, match="at most 100,000"):
        storage.repair_index(alice, pack.raw, too_many, 0)
    assert rows(storage, alice, blob(1), blob(2)) == [(blob(1), 0, 1000)]  # untouched


def test_a_removal_is_fenced_and_moves_the_generation(db: Metadata, storage: Storage) -> None:
    alice = new_account(db)
    pack = upload(storage, alice, blob(1), size=1000)  # indexed: blob 1 at 0+1000
    header = [EntryIn(blob(2), 0, 600), EntryIn(blob(3), 600, 400)]

    with pytest.raises(GcRaced, match="list the packs again"):
        storage.repair_index(alice, pack.raw, header, 7)
    assert rows(storage, alice, blob(1), blob(2), blob(3)) == [(blob(1), 0, 1000)]
    assert counters(db, alice)[0] == 0

    done = storage.repair_index(alice, pack.raw, header, 0)
    assert (done.added, done.removed, done.gc_generation) == (2, 1, 1)
    assert counters(db, alice)[0] == 1
    assert rows(storage, alice, blob(1), blob(2), blob(3)) == [
        (blob(2), 0, 600),
        (blob(3), 600, 400),
    ]
    # A moved row (same blob, another range) is a removal too: fenced, and counted twice.
    moved = [EntryIn(blob(2), 0, 500), EntryIn(blob(3), 600, 400)]
    with pytest.raises(GcRaced):
        storage.repair_index(alice, pack.raw, moved, 0)
    again = storage.repair_index(alice, pack.raw, moved, 1)
    assert (again.added, again.removed, again.gc_generation) == (1, 1, 2)


def test_additions_alone_need_no_fence(db: Metadata, storage: Storage) -> None:
    alice = new_account(db)
    pack = upload(storage, alice, blob(1), size=1000)
    other = upload(storage, alice, blob(2))
    storage.condemn_packs(alice, [other.raw], *counters(db, alice))  # generation 0 → 1
    # Planned at generation 0, before the condemnation: adding takes nothing away.
    header = [EntryIn(blob(1), 0, 1000), EntryIn(blob(4), 0, 10), EntryIn(blob(4), 5, 5)]
    done = storage.repair_index(alice, pack.raw, header, 0)
    assert (done.added, done.removed, done.gc_generation) == (1, 0, 1)
    # A blob listed twice: the first entry wins.
    assert rows(storage, alice, blob(1), blob(4)) == [(blob(1), 0, 1000), (blob(4), 0, 10)]
    unchanged = storage.repair_index(alice, pack.raw, header[:2], 0)
    assert (unchanged.added, unchanged.removed, unchanged.gc_generation) == (0, 0, 1)


def test_the_charge_follows_the_entries(db: Metadata, storage: Storage) -> None:
    alice = new_account(db)
    pack = upload(storage, alice, blob(1), size=1000)
    assert db.user_by_id(alice.user.id).used_bytes == 1000
    many = [EntryIn(bytes([n]) * 32, n, 1) for n in range(1, 21)]  # 20 × 256 > 1000

    storage.repair_index(alice, pack.raw, many, 0)
    assert db.user_by_id(alice.user.id).used_bytes == 20 * PACK_ENTRY_CHARGE
    storage.repair_index(alice, pack.raw, many[:2], 1)  # back under the size
    assert db.user_by_id(alice.user.id).used_bytes == 1000
    storage.repair_index(alice, pack.raw, many, 2)
    # Condemning moves exactly the charge the repair left, so nothing is lost or kept.
    storage.condemn_packs(alice, [pack.raw], *counters(db, alice))
    user = db.user_by_id(alice.user.id)
    assert (user.used_bytes, user.condemned_bytes) == (0, 20 * PACK_ENTRY_CHARGE)


# ---------------------------------------------------------------- over the wire


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _start(tmp_path, LIMITS)


def test_repair_index_over_grpc(served: Served) -> None:
    """The RPC maps the request and the answers, and each refusal to its status code and
    reason, on a real in-process server."""
    stub = served.storage
    data = os.urandom(1000)
    head = pb.PackHeader(
        size=1000,
        sha256=hashlib.sha256(data).digest(),
        entries=[pb.PackEntry(blob_id=blob(1), offset=0, length=1000)],
    )
    pack = stub.UploadPack(
        iter([pb.UploadPackRequest(header=head), pb.UploadPackRequest(data=data)]),
        metadata=served.md,
    ).pack_id

    def repair(pack_id: bytes, entries: list[tuple[bytes, int, int]], generation: int) -> Any:
        request = pb.RepairIndexRequest(
            pack_id=pack_id,
            entries=[pb.PackEntry(blob_id=b, offset=o, length=n) for b, o, n in entries],
            expected_generation=generation,
        )
        return stub.RepairIndex(request, metadata=served.md, timeout=10)

    def refusal(*args: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            repair(*args)
        err: Any = caught.value
        return err.code(), _reason(err)

    header = [(blob(2), 0, 600), (blob(3), 600, 400)]
    assert refusal(os.urandom(16), header, 0) == (grpc.StatusCode.NOT_FOUND, "not_found")
    assert refusal(pack, [(blob(2), 999, 2)], 0)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(pack, header, 5) == (grpc.StatusCode.ABORTED, "gc_generation_changed")
    done = repair(pack, header, 0)
    assert (done.added, done.removed, done.gc_generation) == (2, 1, 1)
    found = stub.FindBlobs(pb.FindBlobsRequest(blob_ids=[blob(1), blob(2)]), metadata=served.md)
    assert [(loc.blob_id, loc.offset) for loc in found.found] == [(blob(2), 0)]
    assert found.gc_generation == 1
