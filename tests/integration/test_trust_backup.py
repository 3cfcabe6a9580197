"""Trust cases of backup (issue 11, cases 3 and 4), with a real server and the real CLI.

3. Damaged local state must not make a wrong backup: a stat-cache row that was swapped,
   overwritten or that names a chunk the server lost is never trusted.
4. A backup that could not read everything says so: exit 13, the skipped paths listed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

from tests.integration.harness import CLIENT, Client, Server, base_env

PARTIAL = 13  # errors.PartialSnapshot.exit_code, spelled out: the number is the contract

# Root reads a chmod-000 file anyway (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH). Dropping
# both from the bounding set makes the kernel check the mode bits for root as for
# anyone: a really unreadable path, for the same user, home and files.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def run_plain_user(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a process that file permissions apply to (root without DAC override)."""
    prefix = NO_DAC if os.geteuid() == 0 else []
    env = base_env() | {"ANYSYNC_HOME": str(client.home), "ANYSYNC_PASSWORD": client.password}
    return subprocess.run(
        [*prefix, CLIENT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def backup_json(client: Client, *paths: Path) -> dict[str, object]:
    return json.loads(client.run("backup", "--json", *map(str, paths)).stdout)


# ---------------------------------------------------------------- 4: partial backups


def make_partial_source(src: Path) -> None:
    src.mkdir()
    (src / "ok.txt").write_bytes(b"readable\n")
    (src / "secret.txt").write_bytes(b"nobody may read this\n")
    (src / "secret.txt").chmod(0)
    locked = src / "locked"
    locked.mkdir()
    (locked / "inner.txt").write_bytes(b"inside\n")
    locked.chmod(0)
    os.mkfifo(src / "pipe")
    os.mknod(src / "sock", stat.S_IFSOCK | 0o600)


def test_a_backup_that_could_not_read_everything_exits_13_and_lists_it(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Docs"
    make_partial_source(src)
    device_a.signup(server, "partial@example.org")

    proc = run_plain_user(device_a, "backup", "--json", str(src))
    assert proc.returncode == PARTIAL, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["partial"] is True
    skipped = {item["path"]: item["reason"] for item in doc["skipped"]}
    assert skipped == {
        str(src / "secret.txt"): "Permission denied",
        str(src / "locked"): "Permission denied",
        str(src / "pipe"): "fifo",
        str(src / "sock"): "socket",
    }
    assert doc["files"] == 1

    # The snapshot was saved, with everything that could be read.
    device_a.run("restore", "latest", "--target", str(tmp_path / "r"))
    assert sorted(p.name for p in (tmp_path / "r" / "Docs").iterdir()) == ["ok.txt"]

    # The human summary names every skipped path and says the snapshot is partial.
    proc = run_plain_user(device_a, "backup", str(src))
    assert proc.returncode == PARTIAL, proc.stderr
    assert "some paths could not be read" in proc.stdout
    for name, reason in [
        ("secret.txt", "Permission denied"),
        ("locked", "Permission denied"),
        ("pipe", "fifo"),
        ("sock", "socket"),
    ]:
        assert f"{src / name} ({reason})" in proc.stdout


def test_special_files_alone_are_listed_but_the_backup_is_complete(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = tmp_path / "Run"
    src.mkdir()
    (src / "data.txt").write_bytes(b"data\n")
    os.mkfifo(src / "pipe")
    device_a.signup(server, "special@example.org")
    proc = run_plain_user(device_a, "backup", "--json", str(src))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["partial"] is False
    assert doc["skipped"] == [{"path": str(src / "pipe"), "reason": "fifo"}]


# ---------------------------------------------------------------- 3: damaged stat cache

A_BYTES = b"A" * 5000
B_BYTES = b"B" * 5000  # the same size: a swapped chunk list fits without a size mismatch


def two_files_backed_up(server: Server, client: Client, tmp_path: Path, email: str) -> Path:
    src = tmp_path / "Two"
    src.mkdir()
    (src / "a.txt").write_bytes(A_BYTES)
    (src / "b.txt").write_bytes(B_BYTES)
    client.signup(server, email)
    first = backup_json(client, src)
    assert first["files_read"] == 2
    return src


def cache_chunks(client: Client, name: bytes) -> bytes:
    with sqlite3.connect(client.home / "state.db") as db:
        (chunks,) = db.execute("SELECT chunks FROM stat_cache WHERE name = ?", (name,)).fetchone()
    return bytes(chunks)


def set_cache_chunks(client: Client, name: bytes, chunks: bytes) -> None:
    with sqlite3.connect(client.home / "state.db") as db:
        db.execute("UPDATE stat_cache SET chunks = ? WHERE name = ?", (chunks, name))


def restored(client: Client, tmp_path: Path, src: Path) -> tuple[bytes, bytes]:
    target = tmp_path / "restored"
    client.run("restore", "latest", "--target", str(target))
    out = target / src.name
    return (out / "a.txt").read_bytes(), (out / "b.txt").read_bytes()


def test_swapped_stat_cache_rows_are_not_trusted(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = two_files_backed_up(server, device_a, tmp_path, "swap@example.org")
    a, b = cache_chunks(device_a, b"a.txt"), cache_chunks(device_a, b"b.txt")
    assert a != b
    set_cache_chunks(device_a, b"a.txt", b)
    set_cache_chunks(device_a, b"b.txt", a)

    second = backup_json(device_a, src)
    assert restored(device_a, tmp_path, src) == (A_BYTES, B_BYTES)
    assert second["files_read"] == 2  # both rows dropped, both files read again
    assert any("2 damaged" in str(w) for w in second["warnings"])  # type: ignore[attr-defined]
    # The rows written after that backup are sound again: nothing is read.
    assert backup_json(device_a, src)["files_read"] == 0


def test_random_bytes_in_a_stat_cache_row_are_not_trusted(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    src = two_files_backed_up(server, device_a, tmp_path, "noise@example.org")
    set_cache_chunks(device_a, b"a.txt", os.urandom(32))

    second = backup_json(device_a, src)
    assert restored(device_a, tmp_path, src) == (A_BYTES, B_BYTES)
    assert second["files_read"] == 1


def test_a_cached_chunk_the_server_lost_is_uploaded_again(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    """The row is sound (made by this device), but the server no longer has its chunk."""
    src = two_files_backed_up(server, device_a, tmp_path, "lost@example.org")
    lost = cache_chunks(device_a, b"a.txt")
    assert len(lost) == 32
    server.stop()
    with sqlite3.connect(server.home / "metadata.db") as db:
        assert db.execute("DELETE FROM blob_locations WHERE blob_id = ?", (lost,)).rowcount == 1
    server.start()

    second = backup_json(device_a, src)
    assert restored(device_a, tmp_path, src) == (A_BYTES, B_BYTES)
    assert second["files_read"] == 1  # a.txt read again; b.txt's row still reused
    assert any("not on the server" in str(w) for w in second["warnings"])  # type: ignore[attr-defined]
