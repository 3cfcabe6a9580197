"""Drive benchmark (#14): the AnySync drive (smart sync) through real FUSE, on loopback.

    python bench/drive_bench.py              # full: 100,000-entry heads, 256 MiB file
    python bench/drive_bench.py --quick      # small sizes, ~30 s (tests/bench/test_drive_quick.py)
    python bench/drive_bench.py --rerender bench/results/drive-DATE.json

One run, one server (`anysync-server` on 127.0.0.1, metrics on; its packs in a local S3
server, SeaweedFS as tests/s3server.py runs it, so that clients read packs straight from
S3 through presigned URLs, and rclone reads the same store; `--store local` or the quick
run: on local disk, every read through the server), two
devices of one account: device A holds the sync folder "docs" (`sync add` + `sync run`);
two more folders are made directly through the repository API in this process (a real
head of 100,000 files is too slow to make through files + sync): "flat" (one directory
of N files) and "tree" (N files in D directories). Device B mounts them with
`anysync drive mount` and this process measures, on the same data:

- `ls -l` of the N-entry directory: first listing after the first mount (cold: trees
  fetched), the same after a remount (trees on disk), warm (median of 3);
- `find` of the N files in D directories, the same three ways; content bytes fetched
  meanwhile (the daemon's `fetched_bytes`) must be 0; the server's bytes out are shown
  too (they include the tree blobs);
- first byte of uncached 16 MiB files (open + read of 1 byte);
- sequential read of a big file, uncached (chunk cache evicted, page cache dropped),
  against `anysync restore` of the same file on device B and against
  `rclone mount --vfs-cache-mode full` of the same plaintext as an object in the same
  S3 server;
- sequential read, cached (from the drive's chunk cache; page cache dropped), and again
  from the page cache;
- close -> visible on device A (`anysync sync run --watch`), from close() on B until A's
  folder holds the file with its content;
- the drive daemon's RSS (psutil; peak = VmHWM) with the N-file head mounted and listed.

Writes bench/results/drive-DATE.{md,json} (quick: quick-drive-latest, ignored by git).
See bench/README.md, "Drive (smart sync)".
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH = ROOT / "bench"
MiB = 1 << 20
KDF_ENV = "ANYSYNC_TESTONLY_WEAKEN_KDF"
PASSWORD = "correct horse battery staple"
EMAIL = "drive-bench@example.com"


@dataclass(frozen=True)
class Sizes:
    files: int  # entries of the flat directory, and files of the tree
    dirs: int  # directories of the tree
    first_mib: int  # size of each file whose first byte is timed
    first_files: int  # how many of them
    seq_mib: int  # the file read sequentially
    samples: int  # repetitions of the reads, restores, rclone reads and close -> visible


FULL = Sizes(files=100_000, dirs=1_000, first_mib=16, first_files=5, seq_mib=256, samples=3)
QUICK = Sizes(files=2_000, dirs=20, first_mib=2, first_files=2, seq_mib=8, samples=1)

# (key, figure, target): the target is ("≤" | "≥" | "=", limit), or None for rows that
# only inform. Units are in the figure's name; {files} etc. are the run's sizes.
Target = tuple[str, float] | None
TARGETS: list[tuple[str, str, Target]] = [
    ("ls_cold_s", "`ls -l` of the {files:,}-entry directory, cold (s)", ("≤", 2)),
    ("ls_remount_s", "`ls -l`, after a remount (trees on disk) (s)", ("≤", 2)),
    ("ls_warm_s", "`ls -l`, warm (median) (s)", ("≤", 1)),
    ("find_cold_s", "`find` of {files:,} files in {dirs:,} dirs, cold (s)", ("≤", 3)),
    ("find_remount_s", "`find`, after a remount (s)", ("≤", 3)),
    ("find_warm_s", "`find`, warm (median) (s)", ("≤", 3)),
    ("listing_content_bytes", "content bytes fetched by all listings and finds", ("=", 0)),
    ("listing_server_bytes_mib", "server bytes out during them (trees) (MiB)", None),
    ("first_byte_ms", "first byte of an uncached {first_mib} MiB file, median (ms)", ("≤", 100)),
    ("first_byte_max_ms", "first byte, slowest of {first_files} (ms)", None),
    ("seq_uncached_mibs", "sequential read of {seq_mib} MiB, uncached (MiB/s)", None),
    ("fetch_mibs", "AnySync's fetch path alone, 16 MiB batches, one thread (MiB/s)", None),
    ("restore_mibs", "`anysync restore` of the same file (MiB/s, whole command)", None),
    ("ratio_restore", "uncached read / restore (throughput ratio)", ("≥", 0.8)),
    ("rclone_mibs", "`rclone mount --vfs-cache-mode full`, same file on S3 (MiB/s)", None),
    ("ratio_rclone", "uncached read / rclone (throughput ratio)", ("≥", 1)),
    ("rclone_crypt_mibs", "the same through an rclone `crypt` remote (encrypted) (MiB/s)", None),
    ("ratio_rclone_crypt", "uncached read / rclone crypt (throughput ratio)", None),
    ("seq_cached_mibs", "sequential read, cached (chunk cache, no page cache) (MiB/s)", ("≥", 800)),
    ("seq_pagecache_mibs", "sequential read, page cache (MiB/s)", None),
    ("visible_s", "close → visible on device A (`sync run --watch`), median (s)", ("≤", 5)),
    ("visible_max_s", "close → visible, slowest (s)", ("≤", 5)),
    ("rss_mib", "daemon RSS, {files:,}-file head listed (MiB)", ("≤", 200)),
    ("rss_peak_mib", "daemon peak RSS (VmHWM) (MiB)", ("≤", 200)),
    ("rss_flat_mib", "daemon RSS, {files:,}-entry directory listed (MiB)", ("≤", 200)),
]  # fmt: skip


def met(value: float, target: Target) -> bool | None:
    if target is None:
        return None
    op, limit = target
    return value <= limit if op == "≤" else value >= limit if op == "≥" else value == limit


def log(msg: str) -> None:
    print(f"[drive-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (for the test suite)")
    p.add_argument("--files", type=int, help="entries of the flat directory and of the tree")
    p.add_argument("--seq-mib", type=int, help="size of the sequentially read file")
    p.add_argument("--samples", type=int, help="repetitions of reads, restores, latencies")
    p.add_argument("--skip-rclone", action="store_true", help="do not compare with rclone")
    p.add_argument(
        "--store",
        choices=["s3", "local"],
        help="where the AnySync server keeps packs (default: s3, the S3 server rclone reads "
        "from, so both read the same store; quick: local)",
    )
    p.add_argument(
        "--anysync-code",
        default="installed",
        help="`installed` (default: the venv's, i.e. the live work tree) or `worktree` "
        "(a copy of src/ taken at the start, for when others edit the work tree)",
    )
    p.add_argument("--work-dir", type=Path, default=BENCH / "work" / "drive")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument(
        "--name", help="result file stem (default drive-DATE; quick: quick-drive-latest)"
    )
    p.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite JSON's .md")
    return p.parse_args(argv)


# ---------------------------------------------------------------------- the code under test


def use_code(spec: str, work: Path) -> str:
    """Make this process and its children run `spec`'s anysync; returns a description."""
    if spec == "installed":
        return f"installed (work tree, {_git_describe()})"
    if spec != "worktree":
        raise SystemExit(f"--anysync-code: {spec!r} is neither `installed` nor `worktree`")
    dest = work / "code"
    shutil.rmtree(dest, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    os.environ["PYTHONPATH"] = str(dest / "src")
    sys.path.insert(0, str(dest / "src"))
    return f"work tree copied at {time.strftime('%H:%M:%S')} ({_git_describe()})"


def _git_describe() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def machine() -> dict[str, Any]:
    from bench.main import machine as bench_machine

    return bench_machine()


# ---------------------------------------------------------------------- devices


class Device:
    """One device's CLI, with the KDF of the run (real unless --quick)."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        from tests.integration.harness import Client

        self.client = Client(home, PASSWORD)
        self.home = home
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.client.run(*args, check=check, env=self.env)

    def env_full(self) -> dict[str, str]:
        from tests.integration.harness import base_env

        return (
            base_env() | self.env | {"ANYSYNC_HOME": str(self.home), "ANYSYNC_PASSWORD": PASSWORD}
        )


mount_times: dict[str, list[float]] = {}  # folder → seconds from `drive mount` to its first pass


@contextlib.contextmanager
def drive(dev: Device, name: str, mnt: Path) -> Iterator[Path]:
    """`anysync drive mount` in the background; waits for the first pass; unmounts after."""
    from tests.integration.drive import wait_for

    started = time.perf_counter()
    dev.run("drive", "mount", name, str(mnt), "--cache-size", "20G", "--min-free", "1G")
    try:
        wait_for(lambda: _passes(dev, mnt), timeout=120, what=f"the first pass of {name}")
        mount_times.setdefault(name, []).append(time.perf_counter() - started)
        yield mnt
    finally:
        dev.run("drive", "umount", str(mnt), "--force", check=False)
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def _passes(dev: Device, mnt: Path) -> int:
    """The drive's passes so far; 0 while its control socket does not answer yet."""
    from anysync.client.drive.control import ControlError
    from tests.integration.drive import status

    try:
        return int(status(dev.client, mnt)["passes"])
    except ControlError:
        return 0


def daemon_of(dev: Device, mnt: Path) -> int:
    for f in (dev.home / "drive").glob("*/drive.json"):
        doc = json.loads(f.read_text())
        if Path(doc["mountpoint"]) == mnt.absolute():
            return int(doc["pid"])
    raise RuntimeError(f"no drive registered at {mnt}")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak VmHWM) of a process, MiB."""
    import psutil  # type: ignore[import-untyped]

    rss = psutil.Process(pid).memory_info().rss / MiB
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


# ---------------------------------------------------------------------- data


def write_random(path: Path, mib: int, seed: int) -> None:
    """Incompressible bytes (a seeded SHAKE stream): nothing dedups or compresses."""
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(hashlib.shake_256(b"%d:%d" % (seed, i)).digest(MiB))


def fetch_rate(home: Path, name: str, path: bytes) -> float:
    """AnySync's fetch path alone (MiB/s): `Repository.load_many` of the file at `path` in
    sync folder `name`, 16 MiB batches on one thread, nothing written: the ceiling of an
    uncached read through the drive on this machine."""
    from anysync.client.home import ClientHome
    from anysync.client.repo.refs import RefBook
    from anysync.client.repo.repository import Repository
    from anysync.client.repo.tree import trail
    from anysync.client.statedb import StateDB
    from anysync.client.sync import engine
    from anysync.types import BlobKind

    h = ClientHome(home)
    remote = h.remote()
    repo = Repository(remote, h.unlock_with_password(PASSWORD))
    state = StateDB(h.state_path)
    try:
        _, head = RefBook(remote, repo, state).head(engine.folder_ref(repo, name))
        assert head is not None
        entry = trail(repo, repo.load_tree(head.commit.tree), path.split(b"/"))[-1]
        per = max(1, 16 * MiB // max(1, entry.size // max(1, len(entry.chunks))))
        started = time.monotonic()
        for i in range(0, len(entry.chunks), per):
            for got in repo.load_many(BlobKind.DATA, entry.chunks[i : i + per]).values():
                if isinstance(got, Exception):
                    raise got
        return entry.size / MiB / (time.monotonic() - started)
    finally:
        repo.close()
        state.close()
        remote.close()


def build_head(home: Path, name: str, layout: dict[bytes, int]) -> float:
    """Commit a head of sync folder `name` straight through the repository API (the
    tests' helper): `layout` maps a directory (b"" = the folder's root) to its number of
    files; every file is the same small chunk. Returns the seconds it took."""
    from tests.integration.drive import commit_head
    from tests.integration.harness import Client

    started = time.monotonic()
    commit_head(Client(home, PASSWORD), name, layout)
    return time.monotonic() - started


# ---------------------------------------------------------------------- measuring


failures: list[str] = []  # commands that exited non-zero: reported, the run goes on


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall time of a command, and the lines it printed (its output is discarded)."""
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True)
    took = time.perf_counter() - started
    if out.returncode != 0:
        errors = out.stderr.decode(errors="replace").splitlines()
        failures.append(
            f"`{' '.join(argv[:-1])} …` exited {out.returncode} after {took:.1f} s with "
            f"{len(errors)} error line(s), first: {errors[0] if errors else '-'}"
        )
        log(failures[-1])
    return took, out.stdout.count(b"\n")


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@dataclass
class Read:
    seconds: float
    first_byte_s: float
    size: int

    @property
    def mibs(self) -> float:
        return self.size / MiB / self.seconds


def read_all(path: Path) -> Read:
    """open + read in 1 MiB requests to EOF: wall time and time to the first byte. The
    bytes are not looked at here (hashing would be timed too); see verify()."""
    buf = bytearray(MiB)
    size = 0
    started = time.perf_counter()
    first = 0.0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if not size:
                first = time.perf_counter() - started
            size += n
    return Read(time.perf_counter() - started, first, size)


def verify(path: Path, digest: str, what: str) -> None:
    if file_sha256(path) != digest:
        raise RuntimeError(f"{what} returned bytes that differ from the source")


def first_byte(path: Path) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.read(fd, 1)
    finally:
        os.close(fd)
    assert len(got) == 1, path
    return time.perf_counter() - started


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------------- rclone


def rclone_reads(
    work: Path, source: Path, samples: int, s3: Any = None
) -> tuple[dict[str, list[Read]], str]:
    """Put `source` into a local S3 server (`s3`: the one AnySync's server uses; else a
    new one), once as a plain object and once through an
    rclone `crypt` remote (encrypted, as AnySync's packs are), and read it through
    `rclone mount --vfs-cache-mode full`, a fresh mount and cache per sample.
    Returns ({"plain": reads, "crypt": reads}, rclone's version)."""
    from minio import Minio

    from tests import s3server

    rclone = shutil.which("rclone")
    if rclone is None and os.geteuid() == 0:
        log("installing rclone (apt-get)")
        subprocess.run(["apt-get", "install", "-y", "rclone"], capture_output=True, timeout=600)
        rclone = shutil.which("rclone")
    if rclone is None:
        raise RuntimeError("rclone is not installed (apt-get install rclone)")
    version = subprocess.run([rclone, "version"], capture_output=True, text=True).stdout
    work.mkdir(parents=True, exist_ok=True)
    own = s3 is None
    s3 = s3 or s3server.start(work / "s3")
    try:
        client = Minio(
            s3.endpoint.removeprefix("http://"),
            s3server.ACCESS_KEY,
            s3server.SECRET_KEY,
            secure=False,
        )
        client.make_bucket("bench")
        client.fput_object("bench", source.name, str(source))
        obscured = subprocess.run(
            [rclone, "obscure", "-"], input=os.urandom(16).hex(), capture_output=True, text=True
        ).stdout.strip()
        # No AWS_* of the caller's: an AWS_CA_BUNDLE makes rclone refuse a plain-HTTP store.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
            "RCLONE_CONFIG_BENCHS3_TYPE": "s3",
            "RCLONE_CONFIG_BENCHS3_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCHS3_ENDPOINT": s3.endpoint,
            "RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID": s3server.ACCESS_KEY,
            "RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY": s3server.SECRET_KEY,
            "RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_BENCHCRYPT_TYPE": "crypt",
            "RCLONE_CONFIG_BENCHCRYPT_REMOTE": "benchs3:bench/crypt",
            "RCLONE_CONFIG_BENCHCRYPT_PASSWORD": obscured,
        }
        conf = work / "rclone.conf"
        conf.write_text("")
        subprocess.run(
            [rclone, "copyto", str(source), f"benchcrypt:{source.name}", "--config", str(conf)],
            env=env, check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        digest = file_sha256(source)
        reads: dict[str, list[Read]] = {"plain": [], "crypt": []}
        for kind, remote in (("plain", "benchs3:bench"), ("crypt", "benchcrypt:")):
            for i in range(samples):
                mnt = work / f"mnt-{kind}-{i}"
                mnt.mkdir(parents=True, exist_ok=True)
                cache = work / f"cache-{kind}-{i}"
                with open(work / "rclone.log", "ab") as rlog:
                    proc = subprocess.Popen(
                        [
                            rclone, "mount", remote, str(mnt), "--config", str(conf),
                            "--vfs-cache-mode", "full", "--cache-dir", str(cache),
                        ],
                        env=env, stdout=rlog, stderr=subprocess.STDOUT, start_new_session=True,
                    )  # fmt: skip
                try:
                    _wait_for_mount(mnt, proc)
                    reads[kind].append(read_all(mnt / source.name))
                    verify(mnt / source.name, digest, f"rclone ({kind})")
                finally:
                    subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
                    _stop(proc)
                    shutil.rmtree(cache, ignore_errors=True)
        return reads, version.splitlines()[0] if version else "rclone"
    finally:
        if own:
            s3.stop()


def _wait_for_mount(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    where = str(mnt.absolute())
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rclone mount exited with {proc.returncode} (see rclone.log)")
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4] == where for line in f):
                return
        time.sleep(0.05)
    raise RuntimeError("rclone mount did not appear in 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, then SIGKILL it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------------- the run


class Run:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, work: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.work = work
        self.m: dict[str, Any] = {}  # key → value (see TARGETS), plus raw samples
        self.notes: list[str] = []
        self.s3: Any = None  # the S3 server of the server's packs (and rclone's object)
        # Real KDF (scrypt N=2^17) as a user has it; the quick run uses the test KDF.
        self.env = {KDF_ENV: "1" if args.quick else "0"}
        os.environ[KDF_ENV] = self.env[KDF_ENV]  # this process unlocks A's keys too

    def run(self) -> None:
        from tests import s3server
        from tests.integration.harness import Server

        srv = Server(self.work / "server-home")
        srv.env = dict(self.env)
        srv.admin("init")
        if (self.args.store or ("local" if self.args.quick else "s3")) == "s3":
            self.s3 = s3server.start(self.work / "s3")
            srv.use_s3(self.s3, "anysync")
        self.metrics = srv.with_metrics()
        try:
            a = Device(self.work / "device-a", self.env)
            b = Device(self.work / "device-b", self.env)
            a.run(
                "signup", "--server", srv.address, "--email", EMAIL,
                "--invite", srv.invite(), "--fingerprint", srv.fingerprint(),
            )  # fmt: skip
            b.run(
                "login",
                "--server",
                srv.address,
                "--email",
                EMAIL,
                "--fingerprint",
                srv.fingerprint(),
            )
            self.prepare(a)
            self.listings(b)
            self.reads(a, b)
            self.visibility(a, b)
        finally:
            srv.stop()
            if self.s3 is not None:
                self.s3.stop()

    def prepare(self, a: Device) -> None:
        s = self.sizes
        docs = self.work / "a-docs"
        docs.mkdir(parents=True)
        log(f"data: {s.first_files} x {s.first_mib} MiB, {s.seq_mib} MiB, sync run on A")
        for i in range(s.first_files):
            write_random(docs / f"first-{i}.bin", s.first_mib, seed=100 + i)
        write_random(docs / "seq.bin", s.seq_mib, seed=1)
        self.seq_digest = file_sha256(docs / "seq.bin")
        a.run("sync", "add", str(docs), "--name", "docs")
        a.run("sync", "run")
        # The same bytes as a backup of their own, for `anysync restore` on B (the chunks
        # dedup: the restore reads the very blobs the drive reads).
        only = self.work / "seq-only"
        only.mkdir()
        os.link(docs / "seq.bin", only / "seq.bin")
        a.run("backup", str(only))
        self.docs = docs
        log(f"heads through the repository API: flat {s.files:,}, tree {s.files:,} in {s.dirs:,}")
        self.m["build_flat_s"] = build_head(a.home, "flat", {b"big-dir": s.files})
        per_dir = s.files // s.dirs
        layout = {b"d%04d" % i: per_dir for i in range(s.dirs)}
        self.m["build_tree_s"] = build_head(a.home, "tree", layout)

    def listings(self, b: Device) -> None:
        from tests.integration.drive import bytes_out, status

        s = self.sizes
        content = 0
        server_out = 0
        mnt = self.work / "b-flat"
        attempts = ("cold",) if self.args.quick else ("cold", "remount")
        for attempt in attempts:
            with drive(b, "flat", mnt):
                fetched, out = int(status(b.client, mnt)["fetched_bytes"]), bytes_out(self.metrics)
                t, lines = timed(["ls", "-l", "--color=never", str(mnt / "big-dir")])
                if lines != s.files + 1:  # + "total"
                    self.notes.append(
                        f"`ls -l` ({attempt}) printed {lines:,} lines, not {s.files + 1:,}"
                    )
                self.m[f"ls_{attempt}_s"] = t
                if attempt == "cold":
                    self.m["ls_warm_samples"] = [
                        timed(["ls", "-l", "--color=never", str(mnt / "big-dir")])[0]
                        for _ in range(3)
                    ]
                    self.m["ls_warm_s"] = median(self.m["ls_warm_samples"])
                    self.m["rss_flat_mib"], self.m["rss_flat_peak_mib"] = rss_mib(daemon_of(b, mnt))
                content += int(status(b.client, mnt)["fetched_bytes"]) - fetched
                server_out += bytes_out(self.metrics) - out
            log(f"ls -l {attempt}: {self.m[f'ls_{attempt}_s']:.2f} s")
        mnt = self.work / "b-tree"
        expected = s.files + s.dirs + 1
        for attempt in attempts:
            with drive(b, "tree", mnt):
                fetched, out = int(status(b.client, mnt)["fetched_bytes"]), bytes_out(self.metrics)
                t, lines = timed(["find", str(mnt)])
                if lines != expected:
                    self.notes.append(
                        f"`find` ({attempt}) printed {lines:,} lines, not {expected:,}"
                    )
                self.m[f"find_{attempt}_s"] = t
                if attempt == "cold":
                    self.m["find_warm_samples"] = [timed(["find", str(mnt)])[0] for _ in range(3)]
                    self.m["find_warm_s"] = median(self.m["find_warm_samples"])
                    # Every directory listed, every entry looked up: the head is in memory.
                    timed(["ls", "-lR", str(mnt)])
                    self.m["rss_mib"], self.m["rss_peak_mib"] = rss_mib(daemon_of(b, mnt))
                content += int(status(b.client, mnt)["fetched_bytes"]) - fetched
                server_out += bytes_out(self.metrics) - out
            log(f"find {attempt}: {self.m[f'find_{attempt}_s']:.2f} s")
        self.m["listing_content_bytes"] = content
        self.m["listing_server_bytes_mib"] = server_out / MiB

    def reads(self, a: Device, b: Device) -> None:
        from tests.integration.drive import state

        s = self.sizes
        mnt = self.work / "b-docs"
        with drive(b, "docs", mnt):
            firsts = [first_byte(mnt / f"first-{i}.bin") for i in range(s.first_files)]
            self.m["first_byte_samples_ms"] = [f * 1000 for f in firsts]
            self.m["first_byte_ms"] = median(firsts) * 1000
            self.m["first_byte_max_ms"] = max(firsts) * 1000
            log(f"first byte: median {self.m['first_byte_ms']:.1f} ms")
            seq = mnt / "seq.bin"
            uncached, cached, paged = [], [], []
            for i in range(s.samples):
                if i:
                    b.run("evict", str(seq))
                    if state(b.client, seq) != "online":
                        self.notes.append(
                            f"after `anysync evict` seq.bin was {state(b.client, seq)!r}"
                        )
                drop_page_cache(seq)
                uncached.append(read_all(seq))
                drop_page_cache(seq)
                cached.append(read_all(seq))
                paged.append(read_all(seq))
                verify(seq, self.seq_digest, "the drive")
            self.m["seq_uncached_samples_mibs"] = [r.mibs for r in uncached]
            self.m["seq_uncached_first_byte_ms"] = [r.first_byte_s * 1000 for r in uncached]
            self.m["seq_uncached_mibs"] = median([r.mibs for r in uncached])
            self.m["seq_cached_samples_mibs"] = [r.mibs for r in cached]
            self.m["seq_cached_mibs"] = median([r.mibs for r in cached])
            self.m["seq_pagecache_mibs"] = median([r.mibs for r in paged])
            log(
                f"seq read: uncached {self.m['seq_uncached_mibs']:.0f} MiB/s, "
                f"cached {self.m['seq_cached_mibs']:.0f} MiB/s"
            )
            self.m["rss_docs_mib"], self.m["rss_docs_peak_mib"] = rss_mib(daemon_of(b, mnt))
        self.restores(b)
        self.m["fetch_mibs"] = median(
            [fetch_rate(a.home, "docs", b"seq.bin") for _ in range(s.samples)]
        )
        if self.args.skip_rclone:
            self.notes.append("rclone: skipped (--skip-rclone)")
            return
        try:
            reads, version = rclone_reads(
                self.work / "rclone", self.docs / "seq.bin", s.samples, self.s3
            )
        except Exception as exc:  # the report says why, the run goes on
            self.notes.append(f"rclone: not measured: {exc}")
            log(f"rclone: not measured: {exc}")
            return
        self.m["rclone_version"] = version
        self.m["rclone_samples_mibs"] = [r.mibs for r in reads["plain"]]
        self.m["rclone_mibs"] = median([r.mibs for r in reads["plain"]])
        self.m["ratio_rclone"] = self.m["seq_uncached_mibs"] / self.m["rclone_mibs"]
        self.m["rclone_crypt_samples_mibs"] = [r.mibs for r in reads["crypt"]]
        self.m["rclone_crypt_mibs"] = median([r.mibs for r in reads["crypt"]])
        self.m["ratio_rclone_crypt"] = self.m["seq_uncached_mibs"] / self.m["rclone_crypt_mibs"]
        log(f"rclone: {self.m['rclone_mibs']:.0f} MiB/s")

    def restores(self, b: Device) -> None:
        s = self.sizes
        snaps = json.loads(b.run("snapshots", "--json").stdout)
        snap = next(sn["id"] for sn in reversed(snaps) if any("seq-only" in p for p in sn["paths"]))
        times = []
        for i in range(s.samples):
            target = self.work / f"restore-{i}"
            started = time.perf_counter()
            b.run("restore", snap, "--target", str(target))
            times.append(time.perf_counter() - started)
            got = [p for p in target.rglob("seq.bin")]
            if len(got) != 1 or file_sha256(got[0]) != self.seq_digest:
                raise RuntimeError("restore returned bytes that differ from the source")
            shutil.rmtree(target)
        # What every command pays before its work (start-up, unlock: scrypt), for scale.
        started = time.perf_counter()
        b.run("snapshots", "--json")
        self.m["command_overhead_s"] = time.perf_counter() - started
        self.m["restore_samples_s"] = times
        self.m["restore_mibs"] = s.seq_mib / median(times)
        self.m["ratio_restore"] = self.m["seq_uncached_mibs"] / self.m["restore_mibs"]
        log(f"restore: {self.m['restore_mibs']:.0f} MiB/s")

    def visibility(self, a: Device, b: Device) -> None:
        from tests.integration.drive import status, wait_for
        from tests.integration.harness import CLIENT

        s = self.sizes
        mnt = self.work / "b-docs"
        with open(self.work / "a-watch.log", "ab") as wlog:
            watcher = subprocess.Popen(
                [CLIENT, "sync", "run", "--watch"],
                env=a.env_full(), stdout=wlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        try:
            with drive(b, "docs", mnt):
                wait_for(
                    lambda: b"watching" in (self.work / "a-watch.log").read_bytes(),
                    timeout=60,
                    what="device A's `sync run --watch`",
                )
                time.sleep(1)  # its first pass
                latencies = []
                for i in range(s.samples):
                    body = f"written on B, sample {i}\n".encode() * 100
                    with open(mnt / f"new-{i}.txt", "wb") as f:
                        f.write(body)
                    closed = time.perf_counter()
                    target = self.docs / f"new-{i}.txt"
                    deadline = closed + 60
                    while time.perf_counter() < deadline:
                        with contextlib.suppress(OSError):
                            if target.read_bytes() == body:
                                break
                        time.sleep(0.01)
                    else:
                        raise RuntimeError(
                            f"new-{i}.txt did not appear on device A in 60 s; B's drive: "
                            f"{json.dumps(status(b.client, mnt))}"
                        )
                    latencies.append(time.perf_counter() - closed)
                    log(f"close -> visible on A: {latencies[-1]:.2f} s")
                    time.sleep(1)
        finally:
            _stop(watcher)
        self.m["visible_samples_s"] = latencies
        self.m["visible_s"] = median(latencies)
        self.m["visible_max_s"] = max(latencies)
        self.m["mount_s"] = mount_times


# ---------------------------------------------------------------------- the report


def render(doc: dict[str, Any]) -> str:
    sz = doc["sizes"]
    m = doc["measures"]
    quick = doc["quick"]
    title = "quick (small sizes)" if quick else "full"
    lines = [
        f"# Drive (smart sync) benchmark, {title}, {doc['date']}",
        "",
        f"Machine: {_machine_line(doc['machine'])}.",
        "",
        f"AnySync: {doc['code']}; KDF: {doc['kdf']}. Server on 127.0.0.1 (TLS gRPC), packs "
        f"on {doc.get('store', 'local disk')}; devices A and B of one account; FUSE via pyfuse3. "
        f"Wall time {doc['wall_s']:.0f} s.",
        "",
        f'Data: folder "flat" = one directory of {sz["files"]:,} files, folder "tree" = '
        f"{sz['files']:,} files in {sz['dirs']:,} directories (both made through the "
        f'repository API, every file the same small chunk); folder "docs" (synced '
        f"from A) = {sz['first_files']} files of {sz['first_mib']} MiB and `seq.bin` of "
        f"{sz['seq_mib']} MiB, incompressible. {sz['samples']} sample(s) of each read, "
        "restore and rclone read (medians).",
        "",
    ]
    if quick:
        lines += [
            "**Quick run: the targets are for the full sizes; pass/miss is shown anyway.**",
            "",
        ]
    lines += ["| figure | target | measured | met |", "|---|---|---|---|"]
    for key, figure, target in TARGETS:
        name = figure.format(**sz)
        wanted = "—" if target is None else f"{target[0]} {_fmt(target[1])}"
        if key not in m:
            lines.append(f"| {name} | {wanted} | not measured | — |")
            continue
        ok = met(m[key], target)
        shown = "—" if ok is None else "**yes**" if ok else "**no**"
        lines.append(f"| {name} | {wanted} | {_fmt(m[key])} | {shown} |")
    lines += ["", "Raw samples and more:", ""]
    extra = [
        (
            "build of the flat head / tree head through the API (s)",
            ["build_flat_s", "build_tree_s"],
        ),
        ("`drive mount` until its first pass, per folder and mount (s)", ["mount_s"]),
        ("`ls -l` warm samples (s)", ["ls_warm_samples"]),
        ("`find` warm samples (s)", ["find_warm_samples"]),
        ("first byte samples (ms)", ["first_byte_samples_ms"]),
        ("uncached read samples (MiB/s)", ["seq_uncached_samples_mibs"]),
        ("uncached read, time to the first 1 MiB request (ms)", ["seq_uncached_first_byte_ms"]),
        ("cached read samples (MiB/s)", ["seq_cached_samples_mibs"]),
        ("restore command samples (s)", ["restore_samples_s"]),
        ("a command's fixed cost: `anysync snapshots --json` (s)", ["command_overhead_s"]),
        ("rclone samples (MiB/s)", ["rclone_samples_mibs"]),
        ("rclone crypt samples (MiB/s)", ["rclone_crypt_samples_mibs"]),
        ("rclone", ["rclone_version"]),
        ("close → visible samples (s)", ["visible_samples_s"]),
        ("daemon peak RSS, the flat mount (MiB)", ["rss_flat_peak_mib"]),
        (
            "daemon RSS / peak, the docs mount after the reads (MiB)",
            ["rss_docs_mib", "rss_docs_peak_mib"],
        ),
    ]
    for label, keys in extra:
        if all(k in m for k in keys):
            lines.append(f"- {label}: {', '.join(_fmt(m[k]) for k in keys)}")
    if doc["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _machine_line(mc: dict[str, Any]) -> str:
    cores = f"{mc['nproc']} cores, {mc['ram_gib']:.0f} GiB RAM"
    return f"{mc['cpu']}, {cores}, {mc['os']}, Python {mc['python']}"


def write(doc: dict[str, Any], results: Path, stem: str) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = results / f"{stem}.md"
    md.write_text(render(doc))
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        doc = json.loads(args.rerender.read_text())
        args.rerender.with_suffix(".md").write_text(render(doc))
        return 0
    base = QUICK if args.quick else FULL
    files = args.files or base.files
    sizes = Sizes(
        files=files,
        dirs=max(1, min(base.dirs, files // 100)) if args.files else base.dirs,
        first_mib=base.first_mib,
        first_files=base.first_files,
        seq_mib=args.seq_mib or base.seq_mib,
        samples=args.samples or base.samples,
    )
    work = args.work_dir
    for old in work.glob("b-*"):  # mount points of a killed run
        subprocess.run(["fusermount3", "-uz", str(old)], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    code = use_code(args.anysync_code, work)
    date = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    run = Run(args, sizes, work)
    failed = None
    try:
        run.run()
    except Exception as exc:  # a partial report is still written
        failed = f"{type(exc).__name__}: {exc}"
        run.notes.append(f"the run failed: {failed}")
        log(f"FAILED: {failed}")
    doc = {
        "date": date.strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine(),
        "code": code,
        "kdf": "test KDF (scrypt N=2^10)" if args.quick else "real KDF (scrypt N=2^17)",
        "store": "S3 (SeaweedFS; clients read packs through presigned URLs)"
        if run.s3 is not None
        else "local disk (every read through the server)",
        "sizes": dataclass_dict(sizes),
        "wall_s": time.monotonic() - started,
        "measures": run.m,
        "notes": failures + run.notes,
        "failed": failed,
    }
    stem = args.name or ("quick-drive-latest" if args.quick else f"drive-{date:%Y-%m-%d}")
    md = write(doc, args.results_dir, stem)
    log(f"report: {md}")
    return 1 if failed else 0


def dataclass_dict(s: Sizes) -> dict[str, int]:
    return {k: getattr(s, k) for k in Sizes.__dataclass_fields__}


if __name__ == "__main__":
    sys.exit(main())
