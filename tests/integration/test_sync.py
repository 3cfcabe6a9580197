"""Two-way sync between devices: real server, real CLI, real folders."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anysync.client.home import ClientHome
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry, check_name, encode
from anysync.client.statedb import StateDB
from anysync.client.sync.engine import folder_ref
from anysync.errors import HostilePath
from anysync.faults import ENV as FAULT_ENV
from anysync.types import BlobKind
from tests.integration.harness import CLIENT, Client, Server, base_env


def tree_of(root: Path) -> dict[str, tuple[object, ...]]:
    """What sync must make equal: type, bytes, permission bits, link targets."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", p.read_bytes(), p.stat().st_mode & 0o777)
    return out


def setup_devices(
    server: Server, tmp_path: Path, n: int, email: str = "sync@example.org"
) -> list[tuple[Client, Path]]:
    devices = []
    for i in range(n):
        client = Client(tmp_path / f"dev{i}")
        if i == 0:
            client.signup(server, email)
        else:
            client.login(server, email)
        folder = tmp_path / f"folder{i}"
        client.run("sync", "add", str(folder), "--name", "Shared")
        devices.append((client, folder))
    return devices


def sync(client: Client) -> str:
    return client.run("sync", "run").stdout


def test_three_devices_converge(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb), (c, fc) = setup_devices(server, tmp_path, 3)
    (fa / "docs").mkdir()
    (fa / "docs" / "plan.txt").write_text("v1 of the plan\n")
    (fa / "empty-dir").mkdir()
    (fa / "script.sh").write_text("#!/bin/sh\n")
    (fa / "script.sh").chmod(0o755)
    (fa / "link").symlink_to("docs/plan.txt")
    (fa / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    sync(a)
    sync(b)
    sync(c)
    assert tree_of(fa) == tree_of(fb) == tree_of(fc)

    # Edits on every device: modify, delete, rename a file and a directory, add.
    (fb / "docs" / "plan.txt").write_text("v2 of the plan\n")
    (fb / "script.sh").unlink()
    (fc / "docs").rename(fc / "documents")  # races with b's edit inside it
    (fc / "big.bin").rename(fc / "big-renamed.bin")
    (fa / "new-from-a.txt").write_text("hello from a")
    for dev in (b, c, a, b, c):
        sync(dev)
    assert tree_of(fa) == tree_of(fb) == tree_of(fc)
    final = tree_of(fa)
    assert "big-renamed.bin" in final and "big.bin" not in final
    assert "script.sh" not in final and "new-from-a.txt" in final
    # b edited docs/plan.txt while c renamed docs/: the edit is not lost.
    contents = {v[1] for v in final.values() if v[0] == "file"}
    assert b"v2 of the plan\n" in contents

    hist = json.loads(a.run("versions", "--json", str(fa / "new-from-a.txt")).stdout)
    assert len(hist) == 1
    moved = [p for p in final if p.endswith("plan.txt")]
    versions = json.loads(a.run("versions", "--json", str(fa / moved[0])).stdout)
    assert versions and versions[0]["size"] == len(b"v2 of the plan\n")


def test_rename_moves_locally_instead_of_downloading(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "dir").mkdir()
    for i in range(50):
        (fa / "dir" / f"f{i}.bin").write_bytes(os.urandom(5000))
    sync(a)
    sync(b)
    (fa / "dir").rename(fa / "renamed")
    out_a = sync(a)
    assert "read" not in out_a  # a rename reads and uploads no content
    out_b = sync(b)
    assert "50 moved" in out_b and "downloaded" not in out_b
    assert tree_of(fa) == tree_of(fb)


def test_conflicting_edits_keep_both_versions(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "report.txt").write_text("original")
    (fa / "keep-me.txt").write_text("original")
    sync(a)
    sync(b)
    (fa / "report.txt").write_text("edited on A")
    (fb / "report.txt").write_text("edited on B")
    (fa / "keep-me.txt").unlink()  # delete on A ...
    (fb / "keep-me.txt").write_text("modified on B")  # ... modify on B
    sync(a)
    out = sync(b)
    assert "conflict" in out
    sync(a)
    assert tree_of(fa) == tree_of(fb)
    names = sorted(p.name for p in fa.iterdir())
    conflict = [n for n in names if n.startswith("report (conflict from ")]
    assert len(conflict) == 1 and conflict[0].endswith(".txt")
    assert (fa / "report.txt").read_text() == "edited on A"
    assert (fa / conflict[0]).read_text() == "edited on B"
    assert (fa / "keep-me.txt").read_text() == "modified on B"
    status = b.run("sync", "status").stdout
    assert "conflict" in status


def test_joining_device_adopts_identical_files_and_keeps_different_ones(
    server: Server, tmp_path: Path
) -> None:
    a = Client(tmp_path / "a")
    a.signup(server, "join@example.org")
    fa = tmp_path / "fa"
    fa.mkdir()
    (fa / "same.txt").write_text("same everywhere")
    (fa / "differs.txt").write_text("the server's copy")
    a.run("sync", "add", str(fa), "--name", "Photos")
    sync(a)
    b = Client(tmp_path / "b")
    b.login(server, "join@example.org")
    fb = tmp_path / "fb"
    fb.mkdir()
    (fb / "same.txt").write_text("same everywhere")
    (fb / "differs.txt").write_text("my local copy")
    assert "joined existing folder" in b.run("sync", "add", str(fb), "--name", "Photos").stdout
    sync(b)
    sync(a)
    assert tree_of(fa) == tree_of(fb)
    copies = [p for p in fb.iterdir() if "conflict" in p.name]
    assert len(copies) == 1 and copies[0].read_text() == "my local copy"
    assert (fb / "differs.txt").read_text() == "the server's copy"


def test_selective_sync(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "Movies").mkdir()
    (fa / "Movies" / "film.bin").write_bytes(os.urandom(100_000))
    (fa / "notes.txt").write_text("n")
    sync(a)
    sync(b)
    b.run("sync", "exclude", str(fb / "Movies"))
    assert not (fb / "Movies").exists()
    sync(b)  # local absence of the excluded tree is not a delete
    sync(a)
    assert (fa / "Movies" / "film.bin").exists()
    (fa / "Movies" / "second.bin").write_bytes(b"new film")
    sync(a)
    sync(b)
    assert not (fb / "Movies").exists()
    assert "excluded" in b.run("sync", "status").stdout
    b.run("sync", "include", str(fb / "Movies"))
    assert (fb / "Movies" / "second.bin").read_bytes() == b"new film"
    assert tree_of(fa) == tree_of(fb)


def test_ignore_rules_sync_and_apply_everywhere(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / ".anysyncignore").write_text("build/\n*.log\n")
    (fa / "build").mkdir()
    (fa / "build" / "out.o").write_bytes(b"obj")
    (fa / "debug.log").write_text("log")
    (fa / ".notes.txt.swp").write_text("vim swap")
    (fa / "real.txt").write_text("real")
    sync(a)
    sync(b)
    assert sorted(p.name for p in fb.iterdir()) == [".anysyncignore", "real.txt"]
    (fb / "local.log").write_text("only here")
    sync(b)
    sync(a)
    assert not (fa / "local.log").exists()


class Output:
    """The lines a process prints, collected on a thread so that a test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._cond = threading.Condition()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        """After the process has exited: read to the end and close the pipe."""
        self._reader.join(timeout=WAIT)
        self._stream.close()

    def _read(self) -> None:
        for line in self._stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, wanted: Callable[[str], bool], start: int = 0) -> int:
        """The index of the first line from `start` on that satisfies `wanted`."""
        deadline = time.monotonic() + WAIT  # a safety net against hanging, not a measure
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if wanted(self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such line within {WAIT} s; got {self.lines}")
                self._cond.wait(left)


WAIT = 60.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT  # a safety net against hanging, not a measure
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {WAIT} s"
        time.sleep(0.05)


def test_watch_mode_propagates_changes(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    procs: list[subprocess.Popen[str]] = []
    outputs: list[Output] = []
    try:
        for client in (a, b):
            env = base_env() | {
                "ANYSYNC_HOME": str(client.home),
                "ANYSYNC_PASSWORD": client.password,
            }
            proc = subprocess.Popen(
                [CLIENT, "sync", "run", "--watch"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            procs.append(proc)
            outputs.append(Output(proc))
        # A pass report comes after the watch is established (Watcher.run starts the
        # file observer and the update stream, then passes): both watchers are up.
        for out in outputs:
            started = out.wait_for(lambda line: line.startswith("watching "))
            out.wait_for(lambda line: line.startswith("Shared: "), started + 1)

        (fa / "saved.txt").write_text("saved on A")
        target = fb / "saved.txt"
        wait_until(lambda: target.exists() and target.read_text() == "saved on A", "saved.txt on B")
        (fb / "saved.txt").write_text("changed on B")
        wait_until(lambda: (fa / "saved.txt").read_text() == "changed on B", "the edit on A")
    finally:
        # Ctrl-C on one, a service manager's SIGTERM on the other: both finish the pass
        # in progress and exit cleanly.
        for p, signum in zip(procs, (signal.SIGINT, signal.SIGTERM), strict=False):
            p.send_signal(signum)
        codes: list[int | None] = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(None)
        for out in outputs:
            out.close()
    assert codes == [0, 0], f"exit codes after SIGINT, SIGTERM (None: still running): {codes}"


def test_server_rollback_and_missing_ref_are_refused(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "one.txt").write_text("1")
    sync(a)
    sync(b)
    db = sqlite3.connect(server.home / "metadata.db")
    old = db.execute("SELECT name, commit_id, version FROM refs").fetchone()
    (fa / "two.txt").write_text("2")
    sync(a)
    sync(b)
    before = tree_of(fb)
    # The server rolls the ref back to the older commit.
    with db:
        db.execute(
            "UPDATE refs SET commit_id = ?, version = version + 1 WHERE name = ?", (old[1], old[0])
        )
    proc = b.run("sync", "run", check=False)
    assert proc.returncode != 0 and "rollback" in proc.stderr
    assert tree_of(fb) == before
    # The server "forgets" the ref: an empty answer deletes nothing.
    with db:
        db.execute("DELETE FROM refs WHERE name = ?", (old[0],))
    proc = b.run("sync", "run", check=False)
    assert proc.returncode != 0 and "no longer has" in proc.stderr
    assert tree_of(fb) == before
    db.close()


def test_killed_sync_resumes_without_loss(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    files = {f"file{i}.bin": os.urandom(200_000) for i in range(30)}
    for name, data in files.items():
        (fa / name).write_bytes(data)

    def killed(client: Client, fault: str) -> None:
        proc = client.run("sync", "run", check=False, env={FAULT_ENV: fault})
        assert proc.returncode == -signal.SIGKILL, (
            f"sync run was to die at {fault} but exited {proc.returncode}\n{proc.stderr}"
        )

    # Content and commit stored, the ref not moved: nobody sees the commit.
    killed(a, "sync.commit-stored")
    assert "up to date" in sync(b) and not list(fb.iterdir())
    # The ref moved, then a died before saving its records.
    killed(a, "sync.before-records")
    # b dies after writing 10 of the 30 downloads, before saving any record.
    killed(b, "sync.apply-file:10")
    assert len(list(fb.iterdir())) == 10
    # b dies once everything is on disk, before saving the records.
    killed(b, "sync.before-records")
    sync(a)
    sync(b)
    sync(a)
    assert tree_of(fa) == tree_of(fb)
    assert {p.name: p.read_bytes() for p in fb.iterdir()} == files
    assert not list(fa.rglob(".anysync-tmp-*")) and not list(fb.rglob(".anysync-tmp-*"))


def publish_tree(client: Client, tmp_path: Path, extra: list[tuple[bytes, bytes]]) -> None:
    """Play another writer: add raw (name, content) files to the folder's head tree, names
    unchecked, through a validly encrypted commit."""
    home = ClientHome(client.home)
    remote = home.remote()
    repo = Repository(remote, home.unlock_with_password(client.password))
    state = StateDB(tmp_path / f"writer-{time.monotonic_ns()}.db")
    try:
        ref = folder_ref(repo, "Shared")

        def make(head: history.Snapshot | None) -> Commit:
            assert head is not None
            entries = repo.load_tree(head.commit.tree)
            placeholders = []
            for i, (name, content) in enumerate(extra):
                chunk = repo.save(BlobKind.DATA, content)
                try:
                    check_name(name)
                    placeholder = name
                except HostilePath:
                    placeholder = bytes([0x41 + i]) * len(name)
                    placeholders.append((placeholder, name))
                entries.append(
                    TreeEntry(placeholder, EntryType.FILE, 0o644, 0, len(content), (chunk,))
                )
            raw = encode(entries)
            for placeholder, name in placeholders:
                raw = raw.replace(placeholder, name)
            root = repo.save(BlobKind.TREE, raw)
            return Commit(
                "sync",
                root,
                (head.id,),
                ref,
                head.commit.counter + 1,
                time.time_ns(),
                1,
                "other",
                "other",
            )

        history.advance(RefBook(remote, repo, state), ref, make)
    finally:
        repo.close()
        state.close()
        remote.close()


@pytest.mark.parametrize("name", [b"..", b"a/../../b"])
def test_hostile_tree_from_the_server_touches_nothing(
    server: Server, tmp_path: Path, name: bytes
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "fine.txt").write_text("fine")
    sync(a)
    sync(b)
    before = tree_of(fb)
    publish_tree(a, tmp_path, [(name, b"evil")])
    proc = b.run("sync", "run", check=False)
    assert proc.returncode != 0 and "hostile" in proc.stderr
    assert tree_of(fb) == before
    assert not (tmp_path / "b").exists()


def test_names_this_file_system_cannot_hold_are_kept_not_crashed_on(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "fine.txt").write_text("fine")
    sync(a)
    too_long = b"n" * 300 + b".txt"  # valid elsewhere, over Linux's 255-byte limit
    publish_tree(a, tmp_path, [(too_long, b"from a system with long names")])
    out = b.run("sync", "run")
    assert "is stuck: name too long" in out.stderr and (fb / "fine.txt").read_text() == "fine"
    (fb / "more.txt").write_text("more")
    sync(b)
    sync(a)  # a cannot hold it either; it stays in the folder, deleted nowhere
    assert (fa / "more.txt").read_text() == "more"
    versions = json.loads(b.run("versions", "--json", str(fb / too_long.decode())).stdout)
    assert versions and versions[0]["deleted"] is False


def test_case_only_rename(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    (fa / "Readme.TXT").write_text("case")
    sync(a)
    sync(b)
    (fa / "Readme.TXT").rename(fa / "readme.txt")
    sync(a)
    sync(b)
    assert sorted(p.name for p in fb.iterdir()) == ["readme.txt"]
    assert tree_of(fa) == tree_of(fb)


def test_large_file_streams_through_in_windows(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2)
    big = os.urandom(40 * 1024 * 1024)  # above the batch size: streamed, window by window
    (fa / "video.bin").write_bytes(big)
    sync(a)
    assert "1 downloaded" in sync(b)
    assert (fb / "video.bin").read_bytes() == big
    out = b.run(
        "restore-version",
        str(fb / "video.bin"),
        "--version",
        _latest(b, fb / "video.bin"),
        "--to",
        str(tmp_path / "copy.bin"),
    )
    assert "restored version" in out.stdout
    assert (tmp_path / "copy.bin").read_bytes() == big


def _latest(client: Client, path: Path) -> str:
    return str(json.loads(client.run("versions", "--json", str(path)).stdout)[0]["version"])
