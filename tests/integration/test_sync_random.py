"""Randomised sync: random edits on three devices, random sync orders, killed passes.

Afterwards every device holds the same tree, and every content that was on a device
when one of its passes completed can be found in some version of the folder.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from anysync.client.repo import envelope, history
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType
from anysync.client.session import ClientHome
from anysync.client.statedb import StateDB
from anysync.client.sync import flat
from anysync.client.sync.engine import folder_ref
from anysync.faults import ENV as FAULT_ENV
from tests.integration.harness import Client, Server
from tests.integration.test_sync import setup_devices, tree_of

# (fault point, highest count): where a pass may die (see anysync.faults).
FAULTS = [
    ("sync.commit-stored", 1),
    ("sync.before-apply", 1),
    ("sync.apply-file", 3),
    ("sync.before-records", 1),
]
NAMES = ["a.txt", "b.txt", "c.md", "d/e.txt", "d/f.txt", "g/h/i.txt"]


def random_edit(rnd: random.Random, folder: Path) -> None:
    existing = [p for p in folder.rglob("*") if p.is_file() and ".anysync-tmp-" not in p.name]
    op = rnd.choice(["create", "create", "modify", "delete", "rename"] if existing else ["create"])
    if op == "create":
        path = folder / rnd.choice(NAMES)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rnd.randbytes(rnd.randint(1, 3000)))
    elif op == "modify":
        rnd.choice(existing).write_bytes(rnd.randbytes(rnd.randint(1, 3000)))
    elif op == "delete":
        rnd.choice(existing).unlink()
    else:
        src = rnd.choice(existing)
        dst = folder / rnd.choice(NAMES)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)


def contents(folder: Path) -> set[bytes]:
    return {p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def all_versions(client: Client, tmp_path: Path) -> set[bytes]:
    """Blob IDs of every file content in every commit of the folder."""
    home = ClientHome(client.home)
    remote = home.remote()
    repo = Repository(remote, home.unlock(client.password))
    state = StateDB(tmp_path / "inspect.db")
    try:
        _, head = history.verified_head(repo, state, folder_ref(repo, "Shared"))
        assert head is not None
        ids = set()
        for snap in history.history(repo, head):
            for e in flat.load(repo, snap.commit.tree).values():
                if e.type is EntryType.FILE and len(e.chunks) == 1:
                    ids.add(e.chunks[0].raw)
        return ids
    finally:
        repo.close()
        state.close()
        remote.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 23])
def test_random_operations_converge_and_lose_nothing(
    server: Server, tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    devices = setup_devices(server, tmp_path, 3)
    must_survive: set[bytes] = set()
    landed: list[str] = []  # fault points at which a pass really died
    not_reached: list[str] = []  # armed passes that finished without reaching theirs
    for _ in range(14):
        client, folder = rnd.choice(devices)
        for _ in range(rnd.randint(1, 3)):
            random_edit(rnd, folder)
        roll = rnd.random()
        if roll < 0.2:  # killed mid-pass, at a random step of it
            point, most = rnd.choice(FAULTS)
            fault = f"{point}:{rnd.randint(1, most)}"
            proc = client.run("sync", "run", check=False, env={FAULT_ENV: fault})
            assert proc.returncode in (-signal.SIGKILL, 0), (
                f"pass armed with {fault} exited {proc.returncode}\n{proc.stderr}"
            )
            if proc.returncode == 0:  # this pass never got there (e.g. nothing to download)
                not_reached.append(fault)
                must_survive |= contents(folder)
            else:
                landed.append(fault)
        elif roll < 0.85:
            client.run("sync", "run")
            must_survive |= contents(folder)
    for _ in range(2):
        for client, folder in devices:
            client.run("sync", "run")
            must_survive |= contents(folder)
    assert landed, f"no kill landed mid-pass (armed but not reached: {not_reached})"
    trees = [tree_of(folder) for _, folder in devices]
    print(f"seed {seed}: died at {landed}; armed but not reached: {not_reached}")
    assert trees[0] == trees[1] == trees[2], f"kills at {landed}"
    key = ClientHome(devices[0][0].home).unlock(devices[0][0].password).id_key
    stored = all_versions(devices[0][0], tmp_path)
    lost = [c[:20] for c in must_survive if envelope.blob_id(key, c).raw not in stored]
    assert not lost, f"{len(lost)} contents are in no version (kills at {landed})"
