"""Prune while others write, with kill -9 (issue #13).

Two devices back up in a loop and one syncs, while a fourth runs `forget` + `prune` in a
loop; the pruner and the server are killed at random moments. Afterwards `check
--read-data` is clean and every snapshot that no rule dropped restores byte for byte:
no blob that a snapshot, a sync head or a concurrent commit needs was ever deleted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.integration.harness import CLIENT, Client, Server, base_env, snapshot_of

ROUNDS = 6
KEEP = 2  # forget --keep-last: per backup source


def start(client: Client, *args: str) -> subprocess.Popen[str]:
    env = base_env() | {"ANYSYNC_HOME": str(client.home), "ANYSYNC_PASSWORD": client.password}
    return subprocess.Popen(
        [CLIENT, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def content(seed: int, round_nr: int) -> bytes:
    """What a writer adds in a round: the same bytes whenever asked again."""
    rnd = random.Random(seed * 1000 + round_nr)
    return rnd.randbytes(rnd.randint(1, 600_000))


def change(root: Path, seed: int, round_nr: int) -> None:
    """Drop half the files, add one: each snapshot has data of its own. Bring back the
    content of a file from three rounds ago (only forgotten snapshots still hold it):
    the backup finds its chunks on the server, and a prune may condemn them before the
    backup commits. That is the race the generation fence (design.md §14.7) is for."""
    root.mkdir(parents=True, exist_ok=True)
    files = sorted(root.glob("*.bin"))
    for f in files[: len(files) // 2]:
        f.unlink()
    (root / f"r{round_nr}.bin").write_bytes(content(seed, round_nr))
    if round_nr >= 3:
        (root / f"back-from-{round_nr - 3}.bin").write_bytes(content(seed, round_nr - 3))
    (root / "notes.txt").write_text(f"round {round_nr}\n" * (1 + round_nr % 200))


class BackupLoop(threading.Thread):
    """Back up `src` once per round; remember what each snapshot must restore to."""

    def __init__(self, client: Client, src: Path, seed: int) -> None:
        super().__init__(daemon=True)
        self.client, self.src, self.seed = client, src, seed
        self.made: dict[str, dict[str, tuple[object, ...]]] = {}  # snapshot ID -> content
        self.failures: list[str] = []
        self.stop_at = threading.Event()

    def run(self) -> None:
        round_nr = 0
        while not self.stop_at.is_set():
            change(self.src, self.seed, round_nr)
            round_nr += 1
            expected = snapshot_of(self.src)
            proc = self.client.run("backup", "--json", str(self.src), check=False)
            if proc.returncode == 0:
                self.made[json.loads(proc.stdout)["snapshot"]] = expected
            elif proc.returncode not in (1, 4, 8):  # server killed, raced: try again
                self.failures.append(f"exit {proc.returncode}: {proc.stderr}")


class SyncLoop(threading.Thread):
    def __init__(self, client: Client, folder: Path) -> None:
        super().__init__(daemon=True)
        self.client, self.folder = client, folder
        self.failures: list[str] = []
        self.stop_at = threading.Event()

    def run(self) -> None:
        round_nr = 0
        while not self.stop_at.is_set():
            change(self.folder, 99, round_nr)
            round_nr += 1
            proc = self.client.run("sync", "run", check=False)
            if proc.returncode not in (0, 1, 4, 8):
                self.failures.append(f"exit {proc.returncode}: {proc.stderr}")


def prune_round(pruner: Client, rnd: random.Random) -> str:
    """forget + prune, perhaps killed at a random moment: what happened, for the log."""
    events = []
    for args in (("forget", "--keep-last", str(KEEP)), ("prune", "--max-unused", "0%")):
        proc = start(pruner, *args)
        kill_after = rnd.uniform(0.2, 3.0) if rnd.random() < 0.5 else None
        try:
            _, err = proc.communicate(timeout=kill_after or 300)
            assert proc.returncode in (0, 1, 4, 8), f"{args}: {proc.returncode}\n{err}"
            events.append(f"{args[0]}={proc.returncode}")
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            events.append(f"{args[0]}=killed")
    return ",".join(events)


def test_prune_while_others_write_with_kills(server: Server, tmp_path: Path) -> None:
    pruner = Client(tmp_path / "pruner")
    pruner.signup(server, "loop@example.org")
    writers = [Client(tmp_path / f"writer{i}") for i in range(2)]
    syncer = Client(tmp_path / "syncer")
    for c in (*writers, syncer):
        c.login(server, "loop@example.org")
    syncer.run("sync", "add", str(tmp_path / "synced"), "--name", "Shared")

    loops = [BackupLoop(w, tmp_path / f"src{i}", seed=i) for i, w in enumerate(writers)]
    sync_loop = SyncLoop(syncer, tmp_path / "synced")
    for t in (*loops, sync_loop):
        t.start()

    rnd = random.Random(2026)
    log = []
    for round_nr in range(ROUNDS):
        log.append(prune_round(pruner, rnd))
        if round_nr % 2 == 1:  # the server dies in the middle of everything
            time.sleep(rnd.uniform(0.0, 1.5))
            assert server.proc is not None
            server.proc.kill()
            server.proc.wait()
            log.append("server killed")
            server.start()

    for t in (*loops, sync_loop):
        t.stop_at.set()
    for t in (*loops, sync_loop):
        t.join(timeout=300)
    assert not any(t.failures for t in (*loops, sync_loop)), [t.failures for t in loops]

    # A last, undisturbed round, then everything is checked.
    pruner.run("forget", "--keep-last", str(KEEP))
    pruner.run("prune", "--max-unused", "0%")
    checked = pruner.run("check", "--read-data", "--json", check=False)
    assert checked.returncode == 0, (log, checked.stdout, checked.stderr)

    listed = json.loads(pruner.run("snapshots", "--json").stdout)
    kept = {s["id"] for s in listed}
    for loop in loops:
        made = [sid for sid in loop.made]  # in the order they were made
        assert made, "each writer finished at least one backup"
        # No rule dropped the newest KEEP of a source: they are listed...
        assert set(made[-KEEP:]) <= kept, (log, made, kept)
        # ...and every listed snapshot restores byte for byte.
        for sid in set(made) & kept:
            target = tmp_path / f"restore-{sid[:12]}"
            pruner.run("restore", sid, "--target", str(target))
            assert snapshot_of(target / loop.src.name) == loop.made[sid], (log, sid)

    # The sync folder's state survived every prune: a fresh device gets it whole.
    syncer.run("sync", "run")
    fresh = Client(tmp_path / "fresh")
    fresh.login(server, "loop@example.org")
    fresh.run("sync", "add", str(tmp_path / "fresh-synced"), "--name", "Shared")
    fresh.run("sync", "run")
    assert snapshot_of(tmp_path / "fresh-synced") == snapshot_of(tmp_path / "synced")
