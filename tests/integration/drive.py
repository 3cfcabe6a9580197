"""Drive test helpers: a mounted drive of a device, the server's bytes-out counter."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from anysync.client.drive import control
from anysync.client.home import ClientHome
from anysync.client.repo import tree
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook, Snapshot
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import engine, flat
from anysync.types import BlobId, BlobKind
from tests.integration.harness import Client, Server

EMAIL = "drive@example.com"


def share_folder(server: Server, a: Client, b: Client, folder: Path) -> None:
    """Device A signs up and syncs `folder` as the sync folder "docs"; device B logs in
    to the same account (and mounts "docs" as a drive in the tests)."""
    a.signup(server, EMAIL)
    b.login(server, EMAIL)
    a.run("sync", "add", str(folder), "--name", "docs")
    a.run("sync", "run")


def bytes_out(metrics_url: str) -> int:
    """Pack bytes the server has sent to clients (from Server.with_metrics())."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(r'^anysync_bytes_total\{direction="out"\} (\d+)$', text, re.M)
    return int(m.group(1)) if m else 0


def _drive_of(client: Client, path: Path) -> tuple[Path, str]:
    """(the drive's state directory, the path inside it) for a path in a drive."""
    for f in (client.home / "drive").glob("*/drive.json"):
        mnt = Path(json.loads(f.read_text())["mountpoint"])
        if path == mnt or mnt in path.parents:
            return f.parent, str(path.relative_to(mnt)).removeprefix(".")
    raise AssertionError(f"{path} is in no drive of {client.home}")


def status(client: Client, mountpoint: Path) -> dict[str, Any]:
    """The daemon's status (what `anysync drive status` prints), over its control socket."""
    root, _ = _drive_of(client, mountpoint)
    return control.call(root, {"op": "status"})


def state(client: Client, path: Path) -> str:
    """online | partial | cached | pinned | dirty (what `anysync drive status PATH` prints)."""
    root, rel = _drive_of(client, path)
    return str(control.call(root, {"op": "state", "paths": [rel]})["states"][0])


def wait_for(check: object, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


@contextlib.contextmanager
def mounted(
    client: Client, name: str, mountpoint: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Path]:
    """`anysync drive mount` (in the background, as a user runs it); unmounted after."""
    client.run("drive", "mount", name, str(mountpoint), *extra, env=env)
    try:
        yield mountpoint
    finally:
        client.run("drive", "umount", str(mountpoint), "--force", check=False, env=env)
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)


def daemon_pid(client: Client) -> int:
    for f in (client.home / "drive").glob("*/drive.json"):
        return int(json.loads(f.read_text())["pid"])
    raise AssertionError("no drive registered")


def publish_raw_root(client: Client, name: str, hostile: bytes) -> None:
    """Play a malicious writer with the account's keys: a new head of sync folder `name`
    whose root tree (validly encrypted) holds one file named `hostile`."""
    placeholder = b"P" * len(hostile)
    raw = tree.encode([TreeEntry(placeholder, EntryType.FILE, 0o644, 0, 0)])
    _commit_root(
        client, name, lambda repo: repo.save(BlobKind.TREE, raw.replace(placeholder, hostile))
    )


def commit_head(client: Client, name: str, layout: dict[bytes, int]) -> None:
    """Commit a head of sync folder `name` straight through the repository API (fast:
    no files, no chunking): `layout` maps a directory (b"" = the root) to its number of
    files; every file is the same small chunk."""

    def root(repo: Repository) -> BlobId:
        body = b"one small chunk shared by every file\n"
        chunk = repo.save(BlobKind.DATA, body)
        entries: flat.Flat = {}
        for d, count in layout.items():
            if d:
                entries[d] = TreeEntry(d.rpartition(b"/")[2], EntryType.DIR, 0o755, 0)
            for i in range(count):
                fname = b"file-%06d.txt" % i
                entries[d + b"/" + fname if d else fname] = TreeEntry(
                    fname, EntryType.FILE, 0o644, 1, len(body), (chunk,), chunk_sizes=(len(body),)
                )
        return flat.build(repo, entries)

    _commit_root(client, name, root)


def _commit_root(client: Client, name: str, root: Callable[[Repository], BlobId]) -> None:
    """A new head of sync folder `name` on device `client`, its tree made by `root`."""
    home = ClientHome(client.home)
    cfg = home.config()
    remote = home.remote()
    repo = Repository(remote, home.unlock_with_password(client.password))
    state = StateDB(home.state_path)
    try:
        tree_id = root(repo)
        ref = engine.folder_ref(repo, name)

        def make(head: Snapshot | None) -> Commit:
            return Commit(
                kind="sync",
                tree=tree_id,
                parents=(head.id,) if head else (),
                ref=ref,
                counter=head.commit.counter + 1 if head else 1,
                time_ns=time.time_ns(),
                device_id=cfg.device_id,
                device=cfg.device_name,
                hostname="test",
                paths=(name,),
            )

        RefBook(remote, repo, state).advance(ref, make)
    finally:
        repo.close()
        state.close()
        remote.close()
