"""Each layer of defence on its own, against a real server: the stat cache, the WatchRefs
heartbeat, the compare-and-swap retries, and a file changing while it is read."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from anysync.cli.progress import Progress
from anysync.client import backup, chunker
from anysync.client.backup import Origin, run_backup
from anysync.client.home import ClientHome
from anysync.client.keys import MasterKeys
from anysync.client.remote import Remote
from anysync.client.repo import history
from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.repository import Repository
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, flat
from anysync.client.sync.state import SyncState
from anysync.errors import AnySyncError, AuthError, PermissionDenied
from anysync.types import BlobId, BlobLocation, PackId, Ref
from tests.integration.harness import Client, Server

DEADLINE = 60.0  # a safety net for waits on events; never reached when things work


@dataclass
class RacingRemote:
    """The real remote, with `race` run (once) just before the first ref update: another
    device's real commit lands between this device's read of the head and its CAS."""

    real: Remote
    race: Callable[[], None] | None = None
    update_calls: list[str] = field(default_factory=list)

    def find_blobs_at(self, ids: Sequence[BlobId]) -> tuple[dict[BlobId, BlobLocation], int]:
        return self.real.find_blobs_at(ids)

    def upload_pack(
        self,
        data: bytes,
        sha256: bytes,
        entries: Sequence[PackedBlob],
        maintenance: bool = False,
    ) -> PackId:
        return self.real.upload_pack(data, sha256, entries, maintenance)

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes:
        return self.real.read_pack(pack_id, offset, length)

    def list_refs(self, prefix: str = "") -> list[Ref]:
        return self.real.list_refs(prefix)

    def get_ref(self, name: str) -> Ref | None:
        return self.real.get_ref(name)

    def update_ref(
        self,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        gc_generation: int | None = None,
    ) -> Ref:
        race, self.race = self.race, None
        if race is not None:
            race()
        try:
            ref = self.real.update_ref(name, expected_version, commit_id, gc_generation)
        except AnySyncError as exc:
            self.update_calls.append(type(exc).__name__)
            raise
        self.update_calls.append("ok")
        return ref


@dataclass
class InProcess:
    """A device's session opened in this process, as the CLI opens it."""

    home: ClientHome
    keys: MasterKeys
    remote: Remote
    state: StateDB

    def repo(self, remote: RacingRemote) -> Repository:
        return Repository(remote, self.keys)

    def origin(self) -> Origin:
        cfg = self.home.config()
        return Origin(cfg.device_id, cfg.device_name, socket.gethostname())


@pytest.fixture
def in_process() -> Iterator[Callable[[Client], InProcess]]:
    opened: list[InProcess] = []

    def open_(client: Client) -> InProcess:
        home = ClientHome(client.home)
        s = InProcess(
            home,
            home.unlock_with_password(client.password),
            home.remote(),
            StateDB(home.state_path),
        )
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.state.close()
        s.remote.close()


# ---------------------------------------------------------------- the stat cache


def test_same_size_edit_with_the_mtime_put_back_is_backed_up(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    """Size, inode and mtime all match the stat cache; only the ctime tells."""
    src = tmp_path / "Docs"
    src.mkdir()
    note = src / "note.txt"
    note.write_bytes(b"version one\n")
    device_a.signup(server, "ctime@example.org")
    device_a.run("backup", str(src))
    before = note.stat()
    with open(note, "r+b") as f:  # same inode, same size
        f.write(b"version two\n")
    os.utime(note, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = note.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    device_a.run("backup", str(src))
    device_a.run("restore", "latest", "--target", str(tmp_path / "r"))
    assert (tmp_path / "r" / "Docs" / "note.txt").read_bytes() == b"version two\n"


# ---------------------------------------------------------------- WatchRefs


def test_watch_refs_stream_of_a_revoked_device_ends(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    server.stop()
    server.env["ANYSYNC_TESTONLY_WATCH_HEARTBEAT"] = "0.5"
    server.start()
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("one")
    device_a.signup(server, "watch@example.org")
    device_a.run("backup", str(src))
    device_b.login(server, "watch@example.org")
    b_id = ClientHome(device_b.home).config().device_id

    remote = ClientHome(device_b.home).remote()
    watch = remote.watch_refs()
    events: queue.Queue[Ref | Exception | str | None] = queue.Queue()

    def consume() -> None:
        try:
            for item in watch:
                events.put(item)
            events.put("ended without an error")
        except Exception as exc:
            events.put(exc)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    deadline = time.monotonic() + DEADLINE

    def next_event() -> Ref | Exception | str | None:
        try:
            return events.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            raise AssertionError(f"nothing happened on the stream for {DEADLINE} s") from None

    try:
        # A heartbeat: the server's handler is subscribed, so no update can slip by.
        assert next_event() is None
        (src / "a.txt").write_text("two")
        device_a.run("backup", str(src))
        [ref] = remote.list_refs()
        while (event := next_event()) is None:
            pass
        assert isinstance(event, Ref), event
        assert (event.name, event.commit_id, event.version) == (
            ref.name,
            ref.commit_id,
            ref.version,
        )

        device_a.run("devices", "revoke", str(b_id))
        # Heartbeats may still arrive until the next one re-authenticates; then the
        # stream must end with the refusal.
        while (event := next_event()) is None or isinstance(event, Ref):
            if time.monotonic() > deadline:
                raise AssertionError("the revoked device still holds its WatchRefs stream")
        assert isinstance(event, AuthError | PermissionDenied), event
        assert "revoked" in str(event)
    finally:
        watch.cancel()
        reader.join(timeout=DEADLINE)
        remote.close()


# ---------------------------------------------------------------- compare-and-swap retries


def test_backup_retries_its_commit_after_a_concurrent_one(
    server: Server,
    device_a: Client,
    device_b: Client,
    tmp_path: Path,
    in_process: Callable[[Client], InProcess],
) -> None:
    """Two devices of one host back up the same path (one ref); B's commit lands between
    A's read of the head and A's compare-and-swap: A retries on top of B's commit."""
    src = tmp_path / "Docs"
    src.mkdir()
    (src / "a.txt").write_text("from A")
    device_a.signup(server, "cas@example.org")
    device_b.login(server, "cas@example.org")
    a = in_process(device_a)

    def b_backs_up() -> None:
        device_b.run("backup", str(src))

    racing = RacingRemote(a.remote, race=b_backs_up)
    repo = a.repo(racing)
    try:
        progress = Progress("backup", enabled=False)
        result = run_backup(repo, racing, a.state, [src], a.origin(), progress)
        assert racing.update_calls == ["Conflict", "ok"]
        ref = backup.backup_ref_name(repo, socket.gethostname(), [src])
        [(name, head_id)] = [(r.name, r.commit_id) for r in a.remote.list_refs()]
        assert (name, head_id) == (ref, result.snapshot.id)
        chain = history.history(repo, result.snapshot)
        assert [s.commit.counter for s in chain] == [2, 1]
        assert [s.commit.device_id for s in chain] == [
            a.home.config().device_id,
            ClientHome(device_b.home).config().device_id,
        ]
        assert a.state.seen(ref) == (result.snapshot.id, 2)
    finally:
        repo.close()
    listing = device_b.run("snapshots").stdout
    assert result.snapshot.id.hex()[:8] in listing


def test_sync_pass_merges_again_after_losing_the_race(
    server: Server,
    device_a: Client,
    device_b: Client,
    tmp_path: Path,
    in_process: Callable[[Client], InProcess],
) -> None:
    dir_a, dir_b = tmp_path / "A", tmp_path / "B"
    device_a.signup(server, "synccas@example.org")
    device_b.login(server, "synccas@example.org")
    device_a.run("sync", "add", str(dir_a), "--name", "shared")
    (dir_a / "base.txt").write_text("base")
    device_a.run("sync", "run")
    device_b.run("sync", "add", str(dir_b), "--name", "shared")
    device_b.run("sync", "run")
    assert (dir_b / "base.txt").read_text() == "base"
    (dir_a / "from-a.txt").write_text("written on A")
    (dir_b / "from-b.txt").write_text("written on B")

    a = in_process(device_a)
    folder = SyncState(a.state).find_folder("shared")
    assert folder is not None
    racing = RacingRemote(a.remote, race=lambda: device_b.run("sync", "run"))
    repo = a.repo(racing)
    try:
        cfg = a.home.config()
        device = engine.Device(cfg.device_id, cfg.device_name, socket.gethostname())
        result = engine.run_pass(repo, racing, a.state, folder, device)
        assert racing.update_calls == ["Conflict", "ok"]
        assert result.conflicts == []
        assert result.committed is not None
        head = a.remote.get_ref(folder.ref)
        assert head is not None and head.commit_id == result.committed
        commit = repo.load_commit(head.commit_id)
        assert commit.counter == 3  # A's first, B's, then A's retried one
        assert set(flat.load(repo, commit.tree)) == {b"base.txt", b"from-a.txt", b"from-b.txt"}
    finally:
        repo.close()
    assert (dir_a / "from-b.txt").read_text() == "written on B"
    device_b.run("sync", "run")
    assert (dir_b / "from-a.txt").read_text() == "written on A"


# ---------------------------------------------------------------- a file changing while read


def test_a_file_changing_while_it_is_read_is_never_recorded_silently(
    server: Server,
    device_a: Client,
    tmp_path: Path,
    in_process: Callable[[Client], InProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "Docs"
    src.mkdir()
    victim = src / "growing.bin"
    old, new = os.urandom(3 * 1024 * 1024), os.urandom(3 * 1024 * 1024)
    victim.write_bytes(old)
    (src / "calm.txt").write_text("unchanged")
    device_a.signup(server, "changing@example.org")
    a = in_process(device_a)

    real_file_chunks = chunker.Chunker.file_chunks

    def changing_meanwhile(self: chunker.Chunker, f: object, size: int) -> Iterator[bytes]:
        pieces = real_file_chunks(self, f, size)  # type: ignore[arg-type]
        first = next(pieces, None)
        if first is not None:
            yield first
        if size == len(old):  # the victim: another program rewrites it mid-read
            with open(victim, "r+b") as w:
                w.write(new)
        yield from pieces

    monkeypatch.setattr(chunker.Chunker, "file_chunks", changing_meanwhile)
    repo = a.repo(RacingRemote(a.remote))
    try:
        progress = Progress("backup", enabled=False)
        result = run_backup(repo, a.remote, a.state, [src], a.origin(), progress)
    finally:
        repo.close()
    monkeypatch.undo()
    assert victim.read_bytes() == new

    device_a.run("restore", "latest", "--target", str(tmp_path / "r1"))
    recorded = (tmp_path / "r1" / "Docs" / "growing.bin").read_bytes()
    warned = [w for w in result.stats.warnings if "growing.bin" in w]
    # Either the snapshot holds the file as it is now, or it says the copy is suspect.
    assert recorded == new or warned == [f"{victim} changed while it was read; backed up as read"]
    assert (tmp_path / "r1" / "Docs" / "calm.txt").read_text() == "unchanged"

    # Whatever was recorded, the stat cache must not vouch for it: the next backup reads
    # the file again and records what is there now.
    device_a.run("backup", str(src))
    device_a.run("restore", "latest", "--target", str(tmp_path / "r2"))
    assert (tmp_path / "r2" / "Docs" / "growing.bin").read_bytes() == new
