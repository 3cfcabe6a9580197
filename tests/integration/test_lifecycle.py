"""A repository that lives for years (issue #13): forget and prune against a real server.

Space comes back (prune reclaims what nothing references, and the store holds what the
server accounts for), a user over quota can forget and prune their way back under it,
and an append-only device can lose nothing by any RPC while a manage device can.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from anysync.client.home import ClientHome
from anysync.errors import AppendOnly, NeedsManage
from anysync.faults import ENV as FAULT_ENV
from anysync.types import BlobId, PackId
from tests.integration.harness import CLIENT, Client, Server, base_env, snapshot_of

MIB = 1024 * 1024


def accounting(server: Server) -> tuple[int, int]:
    """(sum of the sizes of the packs the server records, the account's used_bytes)."""
    with sqlite3.connect(server.home / "metadata.db") as db:
        (sizes,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM packs").fetchone()
        (used,) = db.execute("SELECT COALESCE(SUM(used_bytes), 0) FROM users").fetchone()
    return int(sizes), int(used)


def test_prune_reclaims_what_forgotten_snapshots_alone_held(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "space@example.org")
    src = tmp_path / "Data"
    src.mkdir()
    rnd = random.Random(13)
    (src / "common.bin").write_bytes(rnd.randbytes(2 * MIB))
    unique = 3 * MIB
    states: list[tuple[str, dict[str, tuple[object, ...]]]] = []
    for i in range(4):
        for old in src.glob("unique-*"):
            old.unlink()
        (src / f"unique-{i}.bin").write_bytes(rnd.randbytes(unique))
        device_a.run("backup", str(src))
        states.append((device_a.snapshots()[-1]["id"], snapshot_of(src)))

    # Every other one; the newest is the ref's state and may be forgotten like any other.
    forgotten = [states[1][0], states[3][0]]
    device_a.run("forget", *forgotten)
    before = server.stored_pack_bytes()
    report = json.loads(device_a.run("prune", "--json").stdout)
    after = server.stored_pack_bytes()

    # 95 % of what only the forgotten snapshots held (their unique files) is gone.
    assert before - after >= 0.95 * 2 * unique, (before, after, report)
    # The store holds what the server accounts for, no more (deletes are immediate
    # at --gc-grace 0s, the harness's default).
    sizes, used = accounting(server)
    assert after == sizes
    assert used >= sizes  # charges are never below the size

    left = {s["id"] for s in device_a.snapshots()}
    assert left == {states[0][0], states[2][0]}
    device_a.run("check", "--read-data")
    for i in (0, 2):
        target = tmp_path / f"restored-{i}"
        device_a.run("restore", states[i][0], "--target", str(target))
        assert snapshot_of(target / "Data") == states[i][1]


def test_a_user_over_quota_forgets_and_prunes_back_under_it(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "full@example.org")
    src = tmp_path / "Data"
    src.mkdir()
    rnd = random.Random(5)
    for i in range(3):
        (src / f"month-{i}.bin").write_bytes(rnd.randbytes(3 * MIB))
        device_a.run("backup", str(src))
        (src / f"month-{i}.bin").unlink()
    server.admin("user", "quota", "full@example.org", "4M")
    (src / "new.bin").write_bytes(rnd.randbytes(MIB // 2))
    refused = device_a.run("backup", str(src), check=False)
    assert refused.returncode == 9, refused.stderr
    assert "quota" in refused.stderr

    device_a.run("forget", "--keep-last", "1")
    device_a.run("prune")
    _, used = accounting(server)
    assert used < 4 * MIB
    device_a.run("backup", str(src))
    target = tmp_path / "restored"
    device_a.run("restore", "latest", "--target", str(target))
    assert snapshot_of(target / "Data") == snapshot_of(src)


def test_an_append_only_device_can_lose_nothing_by_any_rpc(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "ransom@example.org")
    device_b.login(server, "ransom@example.org")
    src = tmp_path / "Data"
    src.mkdir()
    (src / "precious.txt").write_text("first\n")
    device_b.run("backup", str(src))
    first = device_b.snapshots()[-1]["id"]
    (src / "precious.txt").write_text("second\n")
    device_b.run("backup", str(src))
    device_a.run("devices", "append-only", str(device_b.device_id))

    remote = ClientHome(device_b.home).remote()
    try:
        listing = remote.list_packs(include_entries=False)
        pack_ids = [p.pack_id for p in listing.packs]
        with pytest.raises(AppendOnly):
            remote.condemn_packs(pack_ids, listing.gc_generation, listing.ref_seq)
        with pytest.raises(AppendOnly):
            remote.set_device_rights(device_b.device_id, "manage")
        with pytest.raises(AppendOnly):
            remote.set_device_rights(device_a.device_id, "append")
        with pytest.raises(AppendOnly):
            remote.revoke_device(device_a.device_id)
        with pytest.raises(AppendOnly):
            remote.elevate(b"\0" * 32)
        # Rewind the backup ref to its first snapshot: refused.
        (ref,) = remote.list_refs()  # device B's one backup source
        with pytest.raises(AppendOnly):
            remote.update_ref(
                ref.name, ref.version, BlobId(bytes.fromhex(first)), listing.gc_generation,
            )  # fmt: skip
    finally:
        remote.close()

    # The CLI says so in one line, exit 5.
    for args in (("prune",), ("forget", "--keep-last", "1")):
        proc = device_b.run(*args, check=False, env={"ANYSYNC_PASSWORD": device_b.password})
        assert proc.returncode == 5, (args, proc.stdout, proc.stderr)
        assert "append-only" in proc.stderr
    # It still adds.
    (src / "third.txt").write_text("third\n")
    device_b.run("backup", str(src))
    assert len(device_a.snapshots()) == 3

    # A manage device can delete.
    device_a.run("forget", first)
    device_a.run("prune")
    assert len(device_a.snapshots()) == 2
    device_a.run("check", "--read-data")


def test_a_write_device_needs_manage_or_a_password_proof(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    device_a.signup(server, "rights@example.org")
    device_b.login(server, "rights@example.org")
    remote = ClientHome(device_b.home).remote()
    try:
        listing = remote.list_packs(include_entries=False)
        with pytest.raises(NeedsManage):
            remote.condemn_packs([PackId(b"\0" * 16)], listing.gc_generation, listing.ref_seq)
    finally:
        remote.close()
    device_a.run("devices", "add-rights", str(device_b.device_id), "manage")
    device_b.run("prune")


def wait_stopped(proc: subprocess.Popen[str]) -> None:
    """Until the process has stopped itself at its fault point (state T)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the backup never reached its fault point")


def test_a_backup_that_reused_data_a_prune_then_deleted_uploads_it_again(
    server: Server, device_a: Client, device_b: Client, tmp_path: Path
) -> None:
    """The race prune is fenced against (design.md §14.7): device B's backup finds a
    file's chunks on the server (only a forgotten snapshot holds them) and stops before
    its commit; device A forgets that snapshot and prunes at grace 0, which deletes them
    (and B's fresh, unreferenced tree packs too). B goes on: its commit must not name
    deleted data. It notices, uploads again what is gone, and the snapshot restores."""
    device_a.signup(server, "race@example.org")
    device_b.login(server, "race@example.org")
    old, src = tmp_path / "Old", tmp_path / "Data"
    old.mkdir()
    src.mkdir()
    back = random.Random(8).randbytes(3 * MIB)
    (old / "back.bin").write_bytes(back)
    device_a.run("backup", str(old))
    (old / "back.bin").unlink()
    device_a.run("backup", str(old))  # the first snapshot alone holds back.bin
    first = device_a.snapshots()[0]["id"]

    (src / "back.bin").write_bytes(back)  # B's file: the same bytes
    (src / "own.txt").write_text("device B's own\n")
    env = base_env() | {
        "ANYSYNC_HOME": str(device_b.home),
        "ANYSYNC_PASSWORD": device_b.password,
        FAULT_ENV: "backup.packs-done@stop",
    }
    proc = subprocess.Popen(
        [CLIENT, "backup", "--json", str(src)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_stopped(proc)
        device_a.run("forget", first)
        pruned = json.loads(device_a.run("prune", "--max-unused", "0%", "--json").stdout)
        assert pruned["condemned_packs"] >= 1, pruned
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    made = json.loads(out)["snapshot"]

    target = tmp_path / "restored"
    device_a.run("restore", made, "--target", str(target))
    assert snapshot_of(target / "Data") == snapshot_of(src)
    device_a.run("check", "--read-data")
