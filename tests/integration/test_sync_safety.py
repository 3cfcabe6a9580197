"""Sync never loses, resurrects or strands a file, and never touches anything outside its
folder (issue 20). Each test is one reduced case of the randomised multi-device test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.harness import Server
from tests.integration.test_kills import TMP, killed_at
from tests.integration.test_sync import setup_devices, sync, tree_of

# ---------------------------------------------------------------- case 1: exclude


def test_exclude_of_a_symlinked_dir_never_touches_the_outside(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="exclude-link@example.org")
    (fa / "photos").mkdir()
    (fa / "photos" / "x.jpg").write_bytes(b"a photo")
    (fa / "docs").mkdir()
    (fa / "docs" / "y.txt").write_bytes(b"a doc")
    sync(a)
    # The user moves photos/ and docs/ to another disk and links them back.
    outside = tmp_path / "other-disk"
    outside.mkdir()
    for name in ("photos", "docs"):
        shutil.move(fa / name, outside / name)
        (fa / name).symlink_to(outside / name)
    # Another device edits the photo meanwhile, so A's record of photos/x.jpg survives
    # A's pass (modify beats delete): the link is the path, nothing behind it is touched.
    b.run("sync", "run")
    (fb / "photos" / "x.jpg").write_bytes(b"edited on B")
    b.run("sync", "run")
    a.run("sync", "exclude", str(fa / "photos"), check=False)
    assert (outside / "photos" / "x.jpg").read_bytes() == b"a photo"
    assert (outside / "photos").is_dir()
    # A command whose pass fails (server unreachable) stops with that pass's error.
    server.stop()
    proc = a.run("sync", "exclude", str(fa / "docs"), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (outside / "docs" / "y.txt").read_bytes() == b"a doc"
    status = a.run("sync", "status").stdout.splitlines()
    assert not [x for x in status if x.startswith("excluded") and x.endswith("Shared/docs")]
    server.start()


# ---------------------------------------------------------------- case 2: type changes


def _make(path: Path, kind: str) -> None:
    if kind == "dir":
        path.mkdir()
    elif kind == "file":
        path.write_text("now a file")
    else:
        path.symlink_to("somewhere")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@pytest.mark.parametrize(
    ("old", "new"), [("dir", "file"), ("file", "dir"), ("dir", "symlink"), ("symlink", "dir")]
)
def test_type_changes_are_applied(server: Server, tmp_path: Path, old: str, new: str) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="types@example.org")
    _make(fa / "p", old)
    sync(a)
    sync(b)
    assert tree_of(fa) == tree_of(fb)
    _remove(fa / "p")
    _make(fa / "p", new)
    sync(a)
    proc = b.run("sync", "run")
    assert "warning" not in proc.stderr and "changed while" not in proc.stderr, proc.stderr
    assert tree_of(fa) == tree_of(fb)
    status = b.run("sync", "status").stdout
    assert "synced" in status and "stuck" not in status and "pending" not in status


def test_a_dir_holding_unsynced_files_is_kept_and_reported_stuck(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="stuck@example.org")
    (fa / "p").mkdir()
    (fa / "p" / "doc.txt").write_text("synced")
    sync(a)
    sync(b)
    (fb / "p" / "scratch.tmp").write_text("ignored by default: never synced")
    shutil.rmtree(fa / "p")
    (fa / "p").write_text("now a file")
    sync(a)
    b.run("sync", "run")
    assert (fb / "p" / "scratch.tmp").read_text() == "ignored by default: never synced"
    status = b.run("sync", "status").stdout
    line = next(x for x in status.splitlines() if x.endswith("Shared/p"))
    assert line.startswith("stuck"), status
    assert "1 stuck" in b.run("sync", "list").stdout


# ---------------------------------------------------------------- case 3: killed passes


def test_own_new_file_then_killed_download_then_remote_delete(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="own-new@example.org")
    (fa / "from-a.txt").write_text("a")
    sync(a)
    (fb / "mine.txt").write_text("B's new file")
    killed_at(b, "sync.apply-file:1", "sync", "run")  # mine.txt committed, from-a written
    sync(a)
    (fa / "mine.txt").unlink()
    (fa / "from-a.txt").unlink()
    sync(a)
    sync(b)
    sync(a)
    assert tree_of(fa) == tree_of(fb) == {}


def test_own_new_file_committed_then_killed_before_apply_then_remote_delete(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="before-apply@example.org")
    (fb / "mine.txt").write_text("B's new file")
    killed_at(b, "sync.before-apply", "sync", "run")  # committed: the ref moved
    sync(a)
    (fa / "mine.txt").unlink()
    sync(a)
    sync(b)
    sync(a)
    assert tree_of(fa) == tree_of(fb) == {}


def test_own_new_file_killed_before_its_commit_lands_is_kept(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="not-landed@example.org")
    (fb / "mine.txt").write_text("B's new file")
    killed_at(b, "sync.commit-stored", "sync", "run")  # the CAS never happened
    (fa / "other.txt").write_text("A moves the ref")
    sync(a)
    sync(b)
    sync(a)
    assert tree_of(fa) == tree_of(fb)
    assert (fa / "mine.txt").read_text() == "B's new file"


# ---------------------------------------------------------------- case 4: long names


def test_conflict_on_a_long_name_keeps_both_versions(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="long@example.org")
    name = "n" * 236 + ".txt"  # 240 bytes: legal
    (fa / name).write_text("original")
    sync(a)
    sync(b)
    (fa / name).write_text("edited on A")
    (fb / name).write_text("edited on B")
    sync(a)
    out = b.run("sync", "run")
    assert "conflict" in out.stdout
    names = [p.name for p in fb.iterdir()]
    copies = [n for n in names if n != name]
    assert len(copies) == 1, names
    assert len(os.fsencode(copies[0])) <= 255 and copies[0].endswith(".txt")
    assert (fb / name).read_text() == "edited on A"
    assert (fb / copies[0]).read_text() == "edited on B"
    sync(a)
    assert tree_of(fa) == tree_of(fb)


# ---------------------------------------------------------------- case 5: temp files


def test_killed_download_leaves_no_temp_file(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="temps@example.org")
    (fa / "d").mkdir()
    (fa / "d" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    sync(a)
    killed_at(b, "sync.file-partial", "sync", "run")
    assert [p for p in fb.rglob("*") if p.name.startswith(TMP)]
    shutil.rmtree(fa / "d")
    sync(a)
    sync(b)
    assert not [p for p in fb.rglob("*") if p.name.startswith(TMP)]
    assert tree_of(fb) == tree_of(fa) == {}


# ---------------------------------------------------------------- case 6: ctime


def test_rename_plus_same_size_edit_with_mtime_restored_syncs(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="ctime@example.org")
    (fa / "a.mp3").write_bytes(b"old tag" + b"\0" * 100)
    sync(a)
    sync(b)
    (fa / "a.mp3").rename(fa / "b.mp3")
    st = (fa / "b.mp3").stat()
    with open(fa / "b.mp3", "r+b") as f:
        f.write(b"new tag")  # same size, in place
    os.utime(fa / "b.mp3", ns=(st.st_atime_ns, st.st_mtime_ns))  # "keep file date"
    sync(a)
    sync(b)
    assert (fb / "b.mp3").read_bytes() == b"new tag" + b"\0" * 100
    assert tree_of(fa) == tree_of(fb)


# ---------------------------------------------------------------- case 7: no spurious skips


def test_chain_of_renames_applies_in_one_pass(server: Server, tmp_path: Path) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="chain@example.org")
    (fa / "a").write_bytes(os.urandom(5000))
    (fa / "b").write_bytes(os.urandom(5000))
    sync(a)
    sync(b)
    (fa / "b").rename(fa / "c")
    (fa / "a").rename(fa / "b")
    sync(a)
    proc = b.run("sync", "run")
    assert "changed while syncing" not in proc.stderr, proc.stderr
    assert "2 moved" in proc.stdout and "downloaded" not in proc.stdout
    assert tree_of(fa) == tree_of(fb)


def test_local_edit_against_a_remote_symlink_converges_in_one_pass(
    server: Server, tmp_path: Path
) -> None:
    (a, fa), (b, fb) = setup_devices(server, tmp_path, 2, email="edit-link@example.org")
    (fa / "f").write_text("v1")
    sync(a)
    sync(b)
    (fa / "f").unlink()
    (fa / "f").symlink_to("elsewhere")
    (fb / "f").write_text("edited on B")
    sync(a)
    proc = b.run("sync", "run")
    assert "changed while syncing" not in proc.stderr and "warning" not in proc.stderr
    assert "conflict" in proc.stdout
    assert os.readlink(fb / "f") == "elsewhere"
    sync(a)
    assert tree_of(fa) == tree_of(fb)
    assert [p.read_text() for p in fa.iterdir() if "conflict" in p.name] == ["edited on B"]


# ---------------------------------------------------------------- reporting


def test_sync_add_on_a_file_is_a_one_line_error(server: Server, tmp_path: Path) -> None:
    ((a, _),) = setup_devices(server, tmp_path, 1, email="add-file@example.org")
    f = tmp_path / "a-file.txt"
    f.write_text("not a folder")
    proc = a.run("sync", "add", str(f), check=False)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "internal error" not in proc.stderr and "Error" not in proc.stderr
