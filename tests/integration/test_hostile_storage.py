"""Issue #12, cases 3-5: what uploads may cost the server.

3. Memory: a storm of parallel large uploads and large FindBlobs calls keeps the
   server's peak RSS within a fixed bound.
4. Metadata: index entries and refs are paid for; an account cannot grow the database
   far past its quota with tiny packs carrying huge indexes, or with thousands of refs.
5. A full disk under the database: a clear "out of disk space" error, nothing half
   recorded, and reads still served.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from anysync.errors import QuotaExceeded
from anysync.v1 import anysync_pb2 as pb
from tests.integration.harness import Server, base_env
from tests.integration.hostile import (
    CALL_DEADLINE,
    Account,
    Wire,
    blob_id,
    describe,
    edit_config,
    memory_kib,
    origin,
    reason,
    signup,
    start_server,
    stored_commit,
    update_ref,
    upload,
    upload_messages,
)

MiB = 1 << 20

# ---------------------------------------------------------------- 3. memory

# The bound of issue #12 for the server's peak RSS (VmHWM) under the storm.
PEAK_RSS_BOUND = 160 * MiB
# `make test` runs the server under coverage (pyproject [tool.coverage.run], patch =
# subprocess), which costs the process memory of its own: 5 MiB more VmHWM, idle and
# after uploads alike (measured 2026-11-30 on this 2-core machine, server of d1b22cd:
# 75.5 → 80.5 MiB idle, 102.8 → 107.6 MiB after 4 × 4 MiB uploads, 87.1 → 88.9 MiB
# after FindBlobs). Allowed, with some margin, only when coverage runs.
COVERAGE_ALLOWANCE = 8 * MiB
# The storm: parallel uploads, one per account and address (so that no per-account or
# per-address cap on streams is involved: 16 users backing up at once must simply
# work), while FindBlobs calls ask for 10,000 blobs each (the protocol's maximum per
# call). Measured on d1b22cd: 16 × 8 MiB uploads alone peak at 250 MiB, 16 × 3
# FindBlobs alone at 186 MiB, this storm at 460-530 MiB (the 16 × 64 MiB: 710
# MiB, without FindBlobs). 32 MiB packs are larger than any buffer a server could
# reasonably keep per upload, and the storm takes about 9 s.
STORM_UPLOADS = 16
STORM_PACK = 32 * MiB
FIND_CALLS = 32
FIND_BATCH = 10_000


def under_coverage() -> bool:
    return "COVERAGE_PROCESS_CONFIG" in base_env()


def test_upload_and_find_storm_stays_within_the_memory_bound(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server-home", registration='"open"')
    try:
        assert server.proc is not None
        pid = server.proc.pid
        with contextlib.ExitStack() as stack:
            origins = [
                stack.enter_context(origin(server, f"127.0.0.{20 + i}"))
                for i in range(STORM_UPLOADS)
            ]
            wires = [o.wire() for o in origins]
            accounts = [signup(w, f"storm{i}@example.org") for i, w in enumerate(wires)]
            # An index of FIND_BATCH blobs to look up, in packs of realistic blob sizes.
            ids = [blob_id() for _ in range(FIND_BATCH)]
            upload(
                wires[0],
                accounts[0],
                FIND_BATCH * 100,
                [(b, i * 100, 100) for i, b in enumerate(ids)],
            )
            piece = os.urandom(MiB)

            def store(n: int) -> int:
                entries = [(blob_id(), i * MiB, MiB) for i in range(STORM_PACK // MiB)]
                resp = wires[n].storage.UploadPack(
                    upload_messages(STORM_PACK, entries, piece),
                    metadata=accounts[n].metadata,
                    timeout=CALL_DEADLINE * 3,
                )
                return int(resp.stored_bytes)

            def find(n: int) -> int:
                wire = wires[n % len(wires)]
                resp = wire.storage.FindBlobs(
                    pb.FindBlobsRequest(blob_ids=ids),
                    metadata=accounts[0].metadata,
                    timeout=CALL_DEADLINE * 3,
                )
                return len(resp.found)

            with ThreadPoolExecutor(max_workers=STORM_UPLOADS + FIND_CALLS) as pool:
                stored = pool.map(store, range(STORM_UPLOADS))
                found = pool.map(find, range(FIND_CALLS))
                assert list(stored) == [STORM_PACK] * STORM_UPLOADS
                assert list(found) == [FIND_BATCH] * FIND_CALLS
        peak = memory_kib(pid, "VmHWM") * 1024
    finally:
        server.stop()
    bound = PEAK_RSS_BOUND + (COVERAGE_ALLOWANCE if under_coverage() else 0)
    assert peak <= bound, (
        f"the server peaked at {peak / MiB:.0f} MiB RSS under the storm "
        f"(bound {bound / MiB:.0f} MiB)"
    )


# ---------------------------------------------------------------- 4. metadata


# The quota of the account in the metadata tests, and how far past it the database may
# grow (issue #12: "bounded"; 2x leaves room for rows the quota does not count exactly).
SMALL_QUOTA = 1 * MiB
GROWTH_BOUND = 2 * SMALL_QUOTA


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "server-home")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def wire(server: Server) -> Iterator[Wire]:
    with origin(server) as home:
        yield home.wire()


def db_bytes(server: Server) -> int:
    """metadata.db's size with its WAL folded in: the checkpoint (TRUNCATE) copies the
    WAL into the file and empties it, as the server's own checkpoints do in time. SQLite
    allows this beside the running server."""
    with contextlib.closing(sqlite3.connect(server.home / "metadata.db", timeout=30)) as db:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, "the checkpoint did not complete"
    return (server.home / "metadata.db").stat().st_size


def is_refused_for_size(err: grpc.RpcError) -> bool:
    """Refused as too much: over the quota, or a request the server does not take."""
    quota = err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return (quota and reason(err) == QuotaExceeded.reason) or (
        err.code() == grpc.StatusCode.INVALID_ARGUMENT
    )


# (pack size, entries per pack, whether entries share one byte): the 1-byte
# packs with a huge index (scaled to the smaller quota), and packs of 1-byte blobs.
SHAPES = {"one-byte-packs": (1, 50_000, True), "one-byte-blobs": (1_000, 1_000, False)}


@pytest.mark.parametrize("shape", SHAPES)
def test_index_entries_cannot_grow_the_database_past_the_quota(
    server: Server, wire: Wire, shape: str
) -> None:
    account = signup(wire, "meta@example.org", server.invite())
    server.admin("user", "quota", account.email, str(SMALL_QUOTA))
    size, count, shared = SHAPES[shape]
    start = db_bytes(server)
    for n in itertools.count(1):
        entries = [(blob_id(), 0 if shared else i, 1) for i in range(count)]
        try:
            upload(wire, account, size, entries)
        except grpc.RpcError as err:
            assert is_refused_for_size(err), describe(err)
            break
        grown = db_bytes(server) - start
        assert grown <= GROWTH_BOUND, (
            f"{n} packs of {size} bytes with {count} index entries each grew the database "
            f"by {grown / MiB:.1f} MiB, with a quota of {SMALL_QUOTA / MiB:.0f} MiB"
        )
    who = wire.devices.Whoami(pb.WhoamiRequest(), metadata=account.metadata, timeout=CALL_DEADLINE)
    assert who.used_bytes <= SMALL_QUOTA


# The most refs an account may have (docs/server-limits.md); the test fills the database
# to just below it as an operator could, then asks for more through the wire. Refs of
# the longest name allowed (200 characters).
MAX_REFS = 10_000
REF_QUOTA = 5 * MiB


def test_thousands_of_refs_are_refused_but_existing_ones_still_move(
    server: Server, wire: Wire
) -> None:
    account = signup(wire, "refs@example.org", server.invite())
    server.admin("user", "quota", account.email, str(REF_QUOTA))
    commit = stored_commit(wire, account)
    start = db_bytes(server)
    server.stop()
    with contextlib.closing(sqlite3.connect(server.home / "metadata.db")) as db, db:
        (user,) = db.execute("SELECT id FROM users WHERE email = ?", (account.email,)).fetchone()
        db.executemany(
            "INSERT INTO refs (user, name, commit_id, version, updated_at, updated_by_device)"
            " VALUES (?, ?, ?, 1, 0, 1)",
            [(user, long_ref_name(i), commit) for i in range(MAX_REFS - 50)],
        )
    server.start()
    with origin(server) as again:
        wire = again.wire()
        refused = None
        for i in range(MAX_REFS - 50, MAX_REFS + 50):
            try:
                update_ref(wire, account, long_ref_name(i), 0, commit)
            except grpc.RpcError as err:
                refused = err
                break
        assert refused is not None, f"{MAX_REFS + 50} refs of 200 characters, none refused"
        assert is_refused_for_size(refused), describe(refused)
        grown = db_bytes(server) - start
        assert grown <= 2 * REF_QUOTA, f"{i} refs grew the database by {grown / MiB:.1f} MiB"
        # Moving a ref the account has is never refused: backups go on.
        assert update_ref(wire, account, long_ref_name(0), 1, commit).version == 2


def long_ref_name(i: int) -> str:
    return f"r-{i:08d}-".ljust(200, "x")


# ---------------------------------------------------------------- 5. a full disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small file system (root only: CI runs as root, and a skip fails CI)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of `directory` up, then give back `leave` bytes."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (MiB, 4096):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler


@pytest.mark.root
def test_a_full_database_disk_is_reported_rolled_back_and_reads_go_on(tmp_path: Path) -> None:
    # The object store on the big disk, the home (metadata.db) on a small one: only the
    # database runs out of room, as when the SQLite file cannot grow.
    objects = tmp_path / "objects"
    with tmpfs(tmp_path / "server-home", "8m") as home:
        server = Server(home)
        server.admin("init")
        edit_config(server, {"metrics.listen": '""', "storage.path": f'"{objects}"'})
        server.start()
        try:
            with origin(server) as o:
                wire = o.wire()
                account = signup(wire, "full@example.org", server.invite())
                data = os.urandom(4096)
                stored_blob = blob_id()
                pack = upload(wire, account, len(data), [(stored_blob, 0, len(data))], data)
                update_ref(wire, account, "r-full", 0, stored_blob)
                used = whoami(wire, account).used_bytes
                db_bytes(server)  # the WAL folded in: the next write must grow a file
                object_files = sorted(p for p in objects.rglob("*") if p.is_file())
                filler = fill(home, leave=256 * 1024)

                # A pack whose data fits but whose index (30,000 rows, about 2 MB of the
                # database) does not.
                entries = [(blob_id(), 4 * i, 4) for i in range(30_000)]
                with pytest.raises(grpc.RpcError) as failed:
                    upload(wire, account, 4 * len(entries), entries)
                err = failed.value
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, describe(err)
                assert "out of disk space" in (err.details() or ""), describe(err)
                assert reason(err) == OUT_OF_SPACE, describe(err)

                # Rolled back: nothing of the pack is recorded, charged or left stored.
                assert not find(wire, account, [b for b, _, _ in entries[:100]])
                assert whoami(wire, account).used_bytes == used
                assert sorted(p for p in objects.rglob("*") if p.is_file()) == object_files
                # Reads go on while the disk is still full.
                assert find(wire, account, [stored_blob]) == [stored_blob]
                ref = wire.storage.GetRef(
                    pb.GetRefRequest(name="r-full"),
                    metadata=account.metadata,
                    timeout=CALL_DEADLINE,
                )
                assert ref.commit_id == stored_blob
                refs = wire.storage.ListRefs(
                    pb.ListRefsRequest(), metadata=account.metadata, timeout=CALL_DEADLINE
                )
                assert [r.name for r in refs.refs] == ["r-full"]
                parts = wire.storage.ReadPack(
                    pb.ReadPackRequest(pack_id=pack.pack_id),
                    metadata=account.metadata,
                    timeout=CALL_DEADLINE,
                )
                assert b"".join(p.data for p in parts) == data
                # With room again, the same upload goes through, without a restart.
                filler.unlink()
                assert upload(wire, account, 4 * len(entries), entries).stored_bytes > 0
        finally:
            server.stop()


OUT_OF_SPACE = "out_of_space"  # the reason of a full server disk (docs/server-limits.md)


def whoami(wire: Wire, account: Account) -> pb.WhoamiResponse:
    who: pb.WhoamiResponse = wire.devices.Whoami(
        pb.WhoamiRequest(), metadata=account.metadata, timeout=CALL_DEADLINE
    )
    return who


def find(wire: Wire, account: Account, ids: list[bytes]) -> list[bytes]:
    resp = wire.storage.FindBlobs(
        pb.FindBlobsRequest(blob_ids=ids), metadata=account.metadata, timeout=CALL_DEADLINE
    )
    return [loc.blob_id for loc in resp.found]
