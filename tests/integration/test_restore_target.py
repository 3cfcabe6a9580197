"""Restoring into a directory that already holds files (issue #16): nothing the user
changed is replaced unless --overwrite says so, what was kept is listed, and every
--include is honoured. The real CLI against a real server."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Client, Server


def _backed_up(client: Client, server: Server, tmp_path: Path) -> Path:
    client.signup(server, "target@example.org")
    src = tmp_path / "Documents"
    (src / "taxes").mkdir(parents=True)
    (src / "photos").mkdir()
    (src / "taxes" / "2025.txt").write_text("taxes 2025\n")
    (src / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 cat")
    (src / "notes.txt").write_text("notes\n")
    (src / "link").symlink_to("notes.txt")
    client.run("backup", str(src))
    return src


def test_changed_files_at_the_target_are_kept_unless_overwrite_says_so(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _backed_up(device_a, server, tmp_path)
    target = tmp_path / "restored"
    device_a.run("restore", "latest", "--target", str(target))
    notes = target / "Documents" / "notes.txt"
    notes.write_text("edited after the restore\n")
    (target / "Documents" / "link").unlink()
    (target / "Documents" / "link").symlink_to("photos")

    again = device_a.run("restore", "latest", "--target", str(target))
    assert notes.read_text() == "edited after the restore\n"
    assert (target / "Documents" / "link").readlink() == Path("photos")
    assert "restored snapshot" in again.stdout and "2 already there" in again.stdout
    assert "kept 2 existing file(s)" in again.stderr
    assert "kept: Documents/notes.txt" in again.stderr
    assert "kept: Documents/link" in again.stderr
    assert "--overwrite if-changed" in again.stderr

    replaced = device_a.run(
        "restore", "latest", "--target", str(target), "--overwrite", "if-changed"
    )
    assert notes.read_text() == "notes\n"
    assert (target / "Documents" / "link").readlink() == Path("notes.txt")
    assert "kept" not in replaced.stderr and "2 already there" in replaced.stdout


def test_every_include_is_restored_and_a_wrong_one_writes_nothing(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _backed_up(device_a, server, tmp_path)
    target = tmp_path / "restored"
    device_a.run(
        "restore", "latest", "--target", str(target),
        "--include", "Documents/taxes", "--include", "Documents/notes.txt",
        "--include", "Documents/taxes/2025.txt",
    )  # fmt: skip
    got = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert got == ["Documents/notes.txt", "Documents/taxes/2025.txt"]

    other = tmp_path / "other"
    wrong = device_a.run(
        "restore", "latest", "--target", str(other),
        "--include", "Documents/taxes", "--include", "Documents/no-such-thing",
        check=False,
    )  # fmt: skip
    assert wrong.returncode == 7 and "Documents/no-such-thing" in wrong.stderr
    assert not any(p.is_file() for p in other.rglob("*"))


def test_bad_overwrite_mode_is_a_usage_error(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    _backed_up(device_a, server, tmp_path)
    proc = device_a.run(
        "restore", "latest", "--target", str(tmp_path / "t"), "--overwrite", "yes",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "if-changed" in proc.stderr
