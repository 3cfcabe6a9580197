"""Server load benchmark: one anysync-server under load, code revisions side by side.

    python bench/server_load.py --quick --code d1b22cd --code worktree  # ~2-3 min a column
    python bench/server_load.py --code d1b22cd --code worktree          # ~6-10 min a column
    python bench/server_load.py --code worktree --compare-with bench/results/OLD.json

For each `--code` (a git revision, `worktree`, or a directory holding src/anysync) the
revision's src/ is exported into a temporary directory and the server, the CLI clients
and the load generators run with PYTHONPATH pointing there. Per revision:

1. idle: a fresh server home, one account; RSS after a few seconds;
2. baseline: a prober calls PreLogin and Whoami in a loop (5 s deadline each), no load;
3. load: M idle WatchRefs streams and K stalled UploadPack streams (a header, then
   nothing), each on its own connection, opened first; then N clients run
   `anysync backup` of ~200 MB each (own accounts) while the prober keeps calling;
   the phase lasts at least --seconds and until the backups end (at most --backup-cap);
4. settle: everything stopped; RSS after --settle-seconds;
5. storms, on a fresh server with one account: 3 storms of 16 parallel 64 MiB
   UploadPack streams plus 16 FindBlobs calls of 10,000 IDs; peak RSS, and RSS
   --settle-seconds after the last storm.

Writes bench/results/server-load-[quick-]DATE.{md,json} (or --name). See bench/README.md,
section "Server load". Exit status 0 when every phase of every revision ran (timeouts of
the prober are measurements, not failures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import ipaddress
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import DataSets, MiB, Scale
from bench.main import machine
from bench.sync_bench import spawn
from bench.tools import base_env, free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-password-not-secret"
OLD_REV = "d1b22cd"  # the server before the rewrite (issue #12)
DEADLINE_S = 5.0  # per prober call
SAMPLE_S = 0.25  # RSS sampling period
IDLE_WAIT_S = 5.0  # after start and sign-up, before the idle RSS
STALLED_PACK = 16 * MiB  # announced size of a stalled upload
STORM_BLOB = 64 * 1024  # a storm pack is indexed as blobs of this size
STORM_PAUSE_S = 2.0
OPEN_BATCH = 50  # streams opened at once by the load generator


@dataclass(frozen=True)
class Mode:
    name: str
    clients: int
    watchers: int
    stalled: int
    seconds: float  # the load phase lasts at least this long
    backup_cap: float  # and at most this long: backups still running are killed
    settle: float
    baseline: float  # seconds of probing before the load
    storms: int
    storm_uploads: int
    storm_pack_mib: int
    find_blobs_calls: int  # per storm, in parallel with the uploads
    find_blobs_ids: int
    d1_files: int  # per-client data: D1-like small files ...
    d2_mib: int  # ... plus 4 large files of d2_mib/4 MiB each (half text, half random)
    # Watchers and stalled uploads belong to accounts of their own, at most this many
    # streams each, and reach the server through a relay that gives every
    # `streams_per_address` of their connections a source address of its own
    # (127.1.x.y): M devices, not M streams of one device (servers cap streams per
    # account and per address).
    streams_per_account: int = 25
    streams_per_address: int = 1
    prelogin_every: float = 2.5  # the prober's PreLogin pace (servers rate-limit it)


FULL = Mode("full", 4, 1000, 100, 90, 300, 60, 10, 3, 16, 64, 16, 10_000, 4000, 144)
QUICK = Mode("quick", 2, 200, 20, 25, 60, 10, 5, 3, 4, 16, 4, 10_000, 1000, 32)


def log(msg: str) -> None:
    print(f"[server-load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class PhaseFailed(Exception):
    pass


# --- code revisions -------------------------------------------------------------------


@dataclass
class Code:
    label: str  # the column's name
    spec: str  # as given to --code
    src: Path  # the directory PYTHONPATH points at
    describe: str  # commit, or what the work tree was


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def export_code(spec: str, dest: Path) -> Code:
    """A stable copy of a revision's src/ under dest (others may edit the work tree)."""
    dest.mkdir(parents=True, exist_ok=True)
    if spec == "worktree":
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(REPO / "src", dest / "src", ignore=ignore)
        head = _git("describe", "--always", "--dirty")
        describe = f"work tree copied at {time.strftime('%H:%M:%S')} ({head})"
        return Code(spec, spec, dest / "src", describe)
    path = Path(spec)
    if path.is_dir():
        src = path / "src" if (path / "src" / "anysync").is_dir() else path
        if not (src / "anysync").is_dir():
            raise SystemExit(f"--code {spec}: no anysync package under {path} or {path}/src")
        return Code(path.name, spec, src.resolve(), f"directory {src.resolve()}")
    commit = _git("rev-parse", "--verify", f"{spec}^{{commit}}")
    archive = subprocess.run(
        ["git", "archive", commit, "src"], cwd=REPO, capture_output=True, check=True, timeout=120
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    return Code(spec, spec, dest / "src", f"commit {commit[:12]}")


# --- processes ------------------------------------------------------------------------


def code_env(code: Code) -> dict[str, str]:
    """The caller's environment without tool settings or coverage; real KDF."""
    env = {k: v for k, v in base_env().items() if not k.startswith("COVERAGE_")}
    return env | {"PYTHONPATH": str(code.src), "PYTHONUNBUFFERED": "1"}


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there. Unlike
    sync_bench.stop, the group is killed even when its leader is gone: a load
    generator's children must not outlive it."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # also whatever it left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of one process, in bytes (empty once it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def children(pid: int) -> list[int]:
    """Every descendant of pid (from /proc/*/stat), for servers that fork workers."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


class Server:
    """One anysync-server home and process of one code revision."""

    def __init__(self, code: Code, root: Path, logs: Path, name: str) -> None:
        self.code = code
        self.home = root / name
        self.logfile = logs / f"{name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.name = name
        self._kids: list[int] = []
        self._kids_at = -math.inf
        self.open_registration = False
        self._fingerprint = ""

    def fingerprint(self) -> str:
        self._fingerprint = self._fingerprint or self.admin("fingerprint")
        return self._fingerprint

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, *args: str) -> str:
        argv = [str(BIN / "anysync-server"), "--home", str(self.home), *args]
        out = subprocess.run(
            argv, env=code_env(self.code), capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise PhaseFailed(f"anysync-server {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def start(self) -> None:
        self.admin("init")
        config = self.home / "server.toml"
        # The metrics endpoint's default port may be taken (other servers, tests).
        text = re.sub(
            r'(\[metrics\][^\[]*?listen\s*=\s*)"[^"]*"',
            lambda m: f'{m.group(1)}"127.0.0.1:{free_port()}"',
            config.read_text(),
        )
        # Open registration: sign-ups need no invite (one admin command less each).
        text = re.sub(r'(?m)^registration\s*=\s*"invite"', 'registration = "open"', text)
        self.open_registration = 'registration = "open"' in text
        config.write_text(text)
        argv = [str(BIN / "anysync-server"), "--home", str(self.home), "run"]
        self.proc = spawn([*argv, "--listen", self.address], code_env(self.code), self.logfile)
        deadline = time.monotonic() + 60
        next_probe = time.monotonic() + 5
        while True:
            if self.proc.poll() is not None:
                raise PhaseFailed(f"{self.name} exited at start; see {self.logfile}")
            if f"listening on {self.address}".encode() in self.logfile.read_bytes():
                return
            if time.monotonic() > next_probe:  # a log format without that line
                with contextlib.suppress(PhaseFailed):
                    self.admin("health", "--address", self.address)
                    return
                next_probe = time.monotonic() + 2
            if time.monotonic() > deadline:
                raise PhaseFailed(f"{self.name} did not start in 60 s; see {self.logfile}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        """RSS of the server's process tree, bytes."""
        if not self.alive():
            return 0
        if time.monotonic() - self._kids_at > 5:  # a scan of /proc costs some CPU
            self._kids, self._kids_at = children(self.pid), time.monotonic()
        return sum(proc_status(p).get("VmRSS", 0) for p in [self.pid, *self._kids])

    def hwm(self) -> int:
        """The kernel's peak RSS (VmHWM) of the main process since the last reset."""
        return proc_status(self.pid).get("VmHWM", 0) if self.alive() else 0

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (clear_refs 5, Linux ≥ 4.0)."""
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def cpu_s(self) -> float:
        if not self.alive():
            return 0.0
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def stop(self) -> None:
        stop(self.proc, timeout_s=25)  # the old server's grace 10 s + drain 5 s


class Sampler:
    """The server's RSS every SAMPLE_S: the peak per phase and a 1 s series."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.phase = "setup"
        self.peaks: dict[str, int] = {}
        self.series: list[tuple[float, str, float]] = []
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        last = -1.0
        while not self._stop.is_set():
            server = self.server
            if server is not None and server.alive():
                rss = server.rss()
                key = f"{server.name}:{self.phase}"
                self.peaks[key] = max(self.peaks.get(key, 0), rss)
                t = time.monotonic() - self._t0
                if t - last >= 1.0:
                    self.series.append((round(t, 1), key, round(rss / MiB, 1)))
                    last = t
            self._stop.wait(SAMPLE_S)

    def peak(self, server: Server, phase: str) -> int:
        return self.peaks.get(f"{server.name}:{phase}", 0)


# --- accounts -----------------------------------------------------------------------


@dataclass
class Account:
    email: str
    home: Path

    def token(self) -> str:
        return str(json.loads((self.home / "access.keys").read_text())["token"])

    def cert_pem(self) -> str:
        return (self.home / "server.crt").read_text()

    def address(self) -> str:
        return str(json.loads((self.home / "config.json").read_text())["server"])

    def env(self, code: Code) -> dict[str, str]:
        return code_env(code) | {"ANYSYNC_HOME": str(self.home), "ANYSYNC_PASSWORD": PASSWORD}


def signup(server: Server, homes: Path, name: str, via: str = "") -> Account:
    """A new account and its device home, with the CLI; `via`: another address to reach
    the server at (the relay)."""
    acc = Account(f"{name}@example.invalid", homes / name)
    argv = [str(BIN / "anysync"), "signup", "--server", via or server.address]
    argv += ["--email", acc.email, "--fingerprint", server.fingerprint()]
    if not server.open_registration:
        argv += ["--invite", server.admin("invite", "create")]
    out = subprocess.run(
        argv,
        env=acc.env(server.code),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        raise PhaseFailed(f"signup {name} exited {out.returncode}: {out.stderr.strip()}")
    return acc


def conn_spec(accounts: list[Account]) -> dict[str, Any]:
    """What the load generators need: the address, the pinned certificate, tokens."""
    return {
        "address": accounts[0].address(),
        "cert_pem": accounts[0].cert_pem(),
        "emails": [a.email for a in accounts],
        "tokens": [a.token() for a in accounts],
    }


def role(
    code: Code, name: str, spec: dict[str, Any], work: Path, logs: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start this script as a load generator (`--role`), with the revision's code."""
    spec_path, out = work / f"{name}.spec.json", work / f"{name}.jsonl"
    spec_path.write_text(json.dumps(spec))
    out.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", spec["role"]]
    argv += ["--spec", str(spec_path), "--out", str(out)]
    return spawn(argv, code_env(code), logs / f"{name}.log"), out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def wait_for(pred: Any, cap_s: float, what: str, check: Server | None = None) -> None:
    deadline = time.monotonic() + cap_s
    while not pred():
        if check is not None and not check.alive():
            raise PhaseFailed(f"the server died while waiting for {what}")
        if time.monotonic() > deadline:
            raise PhaseFailed(f"{what}: not within {cap_s:.0f} s")
        time.sleep(0.2)


# --- one revision -------------------------------------------------------------------


def probe_summary(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    calls = [r for r in rows if "m" in r]
    out: dict[str, Any] = {"seconds": round(seconds, 1), "calls": len(calls)}
    codes = Counter(r["code"] for r in calls)
    out["codes"] = dict(codes)
    out["answered"] = codes.get("OK", 0)
    out["timed_out"] = codes.get("DEADLINE_EXCEEDED", 0)
    out["refused"] = codes.get("RESOURCE_EXHAUSTED", 0)
    out["other_errors"] = len(calls) - out["answered"] - out["timed_out"] - out["refused"]
    out["answered_per_s"] = out["answered"] / seconds if seconds > 0 else None
    for method in ("PreLogin", "Whoami"):
        # A call that did not answer counts as infinitely slow: a percentile that
        # lands on one is "≥ the deadline", not the latency of the calls that did.
        lat = sorted(r["s"] if r["code"] == "OK" else math.inf for r in calls if r["m"] == method)
        for q in (50, 99):
            v = lat[max(0, math.ceil(q / 100 * len(lat)) - 1)] if lat else None
            out[f"{method}_p{q}_ms"] = None if v is None or v == math.inf else v * 1000
            out[f"{method}_p{q}_timed_out"] = v == math.inf
        out[f"{method}_calls"] = len(lat)
    return out


def probe_result(path: Path) -> dict[str, Any]:
    rows = read_jsonl(path)
    start = next((r["started"] for r in rows if "started" in r), None)
    end = max((r["t"] for r in rows if "m" in r), default=start or 0.0)
    return probe_summary(rows, (end - start) if start else 0.0)


def run_prober(
    code: Code, spec: dict[str, Any], seconds: float, work: Path, logs: Path
) -> dict[str, Any]:
    proc, out = role(code, "prober-baseline", spec | {"duration": seconds}, work, logs)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=seconds + 3 * DEADLINE_S + 20)
    finally:
        stop(proc)
    return probe_result(out)


class Revision:
    """Every phase against one code revision; results in self.res."""

    def __init__(
        self, code: Code, mode: Mode, data: DataSets, work: Path, sampler: Sampler
    ) -> None:
        self.code = code
        self.mode = mode
        self.data = data
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sampler = sampler
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers: list[Server] = []
        self.res: dict[str, Any] = {"label": code.label, "describe": code.describe, "errors": []}

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        for phase in (self.load_phases, self.storm_phases):
            try:
                phase()
            except (PhaseFailed, OSError, subprocess.SubprocessError) as exc:
                self.res["errors"].append(f"{phase.__name__}: {exc}")
                log(f"  {self.code.label}: {phase.__name__} FAILED: {exc}")
            finally:
                self.cleanup()
        self.res["elapsed_s"] = round(time.monotonic() - t0, 1)
        return self.res

    def cleanup(self) -> None:
        for p in self.procs:
            stop(p, timeout_s=5)
        self.procs = []
        for s in self.servers:
            s.stop()
            shutil.rmtree(s.home, ignore_errors=True)  # the packs: up to GiBs
        self.servers = []
        self.sampler.server = None

    def _server(self, name: str) -> tuple[Server, Path]:
        server = Server(self.code, self.work / "servers", self.logs, name)
        homes = self.work / f"{name}-clients"
        shutil.rmtree(homes, ignore_errors=True)
        self.servers.append(server)
        server.start()
        self.sampler.server = server
        return server, homes

    def _phase(self, name: str) -> None:
        self.sampler.phase = name
        log(f"  {self.code.label}: {name}")

    # ---- idle, baseline, load, settle

    def load_phases(self) -> None:
        m, res = self.mode, self.res
        self._phase("start")
        server, homes = self._server("server")
        probe = signup(server, homes, "probe")
        self._phase("idle")
        time.sleep(IDLE_WAIT_S)
        res["idle_rss"] = server.rss()
        self._phase("accounts")
        relay_spec = {"role": "relay", "target": server.address, "per": m.streams_per_address}
        relay, relay_out = role(self.code, "relay", relay_spec, self.work, self.logs)
        self.procs.append(relay)
        wait_for(lambda: read_jsonl(relay_out) or relay.poll() is not None, 30, "the relay")
        if relay.poll() is not None:
            raise PhaseFailed(f"the relay exited {relay.returncode}; see {self.logs}")
        via = f"127.0.0.1:{read_jsonl(relay_out)[0]['port']}"
        n_watch = math.ceil((m.watchers + m.stalled) / m.streams_per_account)
        jobs = [(f"client{i}", "") for i in range(m.clients)]
        jobs += [(f"watch{i}", via) for i in range(n_watch)]
        with ThreadPoolExecutor(2) as pool:  # two cores; each sign-up runs scrypt once
            made = list(pool.map(lambda j: signup(server, homes, *j), jobs))
        clients, watch_accounts = made[: m.clients], made[m.clients :]
        spec = conn_spec([probe, *clients])
        res["watch_accounts"] = len(watch_accounts)
        self._phase("baseline")
        res["baseline"] = run_prober(
            self.code,
            spec | {"role": "prober", "prelogin_every": m.prelogin_every},
            m.baseline,
            self.work,
            self.logs,
        )

        self._phase("load")
        server.reset_peak()
        cpu0, busy0 = server.cpu_s(), _busy()
        load_spec = conn_spec(watch_accounts) | {
            "role": "load",
            "watchers": m.watchers,
            "stalled": m.stalled,
        }
        load, load_out = role(self.code, "load", load_spec, self.work, self.logs)
        self.procs.append(load)
        wait_for(
            lambda: any(r.get("ready") for r in read_jsonl(load_out)) or load.poll() is not None,
            120,
            "opening the watchers and stalled uploads",
            server,
        )
        if load.poll() is not None:
            raise PhaseFailed(f"the load generator exited {load.returncode}; see {self.logs}")
        time.sleep(2)  # the streams reach the server
        prober, probe_out = role(
            self.code,
            "prober-load",
            spec
            | {"role": "prober", "duration": m.backup_cap + 60, "prelogin_every": m.prelogin_every},
            self.work,
            self.logs,
        )
        self.procs.append(prober)
        t0 = time.monotonic()
        backups = {}
        for i, acc in enumerate(clients):
            argv = [str(BIN / "anysync"), "backup", "--json", str(self.data.root)]
            out_path, err_path = self.work / f"backup{i}.json", self.logs / f"backup{i}.err"
            with open(out_path, "wb") as out, open(err_path, "ab") as err:
                backups[i] = subprocess.Popen(
                    argv,
                    env=acc.env(self.code),
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.procs.append(backups[i])
        ended: dict[int, float] = {}
        while True:
            now = time.monotonic() - t0
            for i, p in backups.items():
                if i not in ended and p.poll() is not None:
                    ended[i] = now
                    log(f"  {self.code.label}: backup {i} exited {p.returncode} after {now:.1f} s")
            if (len(ended) == len(backups) and now >= m.seconds) or now >= m.backup_cap:
                break
            if not server.alive():
                raise PhaseFailed("the server died during the load")
            time.sleep(0.25)
        load_s = time.monotonic() - t0
        for p in backups.values():
            stop(p, timeout_s=5)
        stop(prober, timeout_s=DEADLINE_S + 3)
        stop(load, timeout_s=15)
        stop(relay, timeout_s=5)
        relay_rows = [r for r in read_jsonl(relay_out) if "connections" in r]
        res["relay"] = relay_rows[-1] if relay_rows else {}
        res["load_server_cpu_s"] = round(server.cpu_s() - cpu0, 1)
        res["load_machine_busy_cpu_s"] = round(_busy() - busy0, 1)
        res["load_peak_hwm"] = server.hwm()
        res["load_peak_sampled"] = self.sampler.peak(server, "load")
        res["load_seconds"] = round(load_s, 1)
        res["probe"] = probe_result(probe_out)
        status = [r for r in read_jsonl(load_out) if "watchers" in r]
        ready = next((r for r in status if r.get("ready")), {})
        res["load_generator"] = (status[-1] if status else {}) | {"open_s": ready.get("open_s")}
        res["backups"] = []
        for i, p in backups.items():
            doc: dict[str, Any] = {"client": i, "exit": p.returncode, "seconds": ended.get(i)}
            doc["killed_at_cap"] = i not in ended
            with contextlib.suppress(ValueError, OSError):
                doc["reported"] = json.loads((self.work / f"backup{i}.json").read_text())
            doc["stderr_tail"] = (self.logs / f"backup{i}.err").read_text(errors="replace")[-500:]
            res["backups"].append(doc)
        ok = [b for b in res["backups"] if b["exit"] == 0]
        res["backups_ok"] = len(ok)
        source = self.data.info.d1_bytes + self.data.info.d2_bytes
        res["backup_source_bytes"] = source
        if ok and len(ok) == len(backups):
            res["backup_mb_s"] = source * len(ok) / max(b["seconds"] for b in ok) / 1e6
        else:
            res["backup_mb_s"] = None

        self._phase("settle")
        time.sleep(m.settle)
        if not server.alive():
            raise PhaseFailed("the server died after the load")
        res["settled_rss"] = server.rss()

    # ---- upload storms

    def storm_phases(self) -> None:
        m, res = self.mode, self.res
        self._phase("start")
        server, homes = self._server("storm-server")
        acc = signup(server, homes, "storm")
        time.sleep(IDLE_WAIT_S)
        res["storm_idle_rss"] = server.rss()
        self._phase("storm")
        server.reset_peak()
        cpu0 = server.cpu_s()
        spec = conn_spec([acc]) | {
            "role": "storm",
            "storms": m.storms,
            "uploads": m.storm_uploads,
            "pack_mib": m.storm_pack_mib,
            "find_calls": m.find_blobs_calls,
            "find_ids": m.find_blobs_ids,
        }
        storm, out = role(self.code, "storm", spec, self.work, self.logs)
        self.procs.append(storm)
        cap = m.storms * 300
        wait_for(lambda: storm.poll() is not None, cap, "the upload storms", server)
        res["storm_server_cpu_s"] = round(server.cpu_s() - cpu0, 1)
        res["storm_peak_hwm"] = server.hwm()
        res["storm_peak_sampled"] = self.sampler.peak(server, "storm")
        res["storm_rss_after"] = server.rss()
        rows = read_jsonl(out)
        res["storms"] = [r for r in rows if "storm" in r]
        if storm.returncode != 0 or len(res["storms"]) != m.storms:
            raise PhaseFailed(f"the storm generator exited {storm.returncode}; see {self.logs}")
        self._phase("storm-settle")
        time.sleep(m.settle)
        if not server.alive():
            raise PhaseFailed("the server died after the storms")
        res["storm_settled_rss"] = server.rss()


def _busy() -> float:
    """CPU seconds the whole machine has used (not idle, not iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# --- the load generators (run as --role, with the revision's code on PYTHONPATH) ----------


def _target_name(cert_pem: str) -> str:
    """A name from the certificate's SANs for gRPC's host-name check (the client pins
    exactly this certificate, as anysync.tls.dns_name_for_verification does)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for kind in (x509.DNSName, x509.IPAddress):
            names = san.get_values_for_type(kind)
            if names:
                return str(names[0])
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else "localhost"


def _channel_args(spec: dict[str, Any], own_connection: bool) -> tuple[Any, list[Any]]:
    import grpc

    creds = grpc.ssl_channel_credentials(root_certificates=spec["cert_pem"].encode())
    options: list[Any] = [
        ("grpc.ssl_target_name_override", _target_name(spec["cert_pem"])),
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.max_send_message_length", 16 << 20),
    ]
    if own_connection:  # channels of one process otherwise share one TCP connection
        options.append(("grpc.use_local_subchannel_pool", 1))
    return creds, options


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def role_prober(spec: dict[str, Any], out: Path) -> int:
    """PreLogin and Whoami, alternately, one at a time, each with a DEADLINE_S deadline."""
    import grpc

    import anysync
    from anysync.v1 import anysync_pb2 as pb
    from anysync.v1 import anysync_pb2_grpc as rpc

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    creds, options = _channel_args(spec, own_connection=True)
    channel = grpc.secure_channel(spec["address"], creds, options=options)
    accounts, devices = rpc.AccountsStub(channel), rpc.DevicesStub(channel)
    email, md = spec["emails"][0], _md(spec["tokens"][0])
    with open(out, "w", buffering=1) as f:
        t = time.monotonic()
        with contextlib.suppress(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=10)
        f.write(json.dumps({"anysync": anysync.__file__, "connect_s": time.monotonic() - t}))
        f.write("\n" + json.dumps({"started": time.time()}) + "\n")
        end = time.monotonic() + float(spec["duration"])
        every = float(spec.get("prelogin_every", 0))
        next_prelogin, method = 0.0, "Whoami"
        while not stopping.is_set() and time.monotonic() < end:
            # PreLogin when due, but never twice in a row (slow answers: alternate).
            if method == "Whoami" and time.monotonic() >= next_prelogin:
                method, next_prelogin = "PreLogin", time.monotonic() + every
            else:
                method = "Whoami"
            t0 = time.perf_counter()
            try:
                if method == "PreLogin":
                    accounts.PreLogin(pb.PreLoginRequest(email=email), timeout=DEADLINE_S)
                else:
                    devices.Whoami(pb.WhoamiRequest(), metadata=md, timeout=DEADLINE_S)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            dt = time.perf_counter() - t0
            f.write(json.dumps({"m": method, "t": time.time(), "s": round(dt, 6), "code": code}))
            f.write("\n")
    channel.close()
    return 0


async def _load(spec: dict[str, Any], out: Path) -> int:
    """M WatchRefs streams and K stalled UploadPack streams, one connection each."""
    import grpc
    import grpc.aio

    import anysync
    from anysync.v1 import anysync_pb2 as pb
    from anysync.v1 import anysync_pb2_grpc as rpc

    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    creds, options = _channel_args(spec, own_connection=True)
    tokens = spec["tokens"]
    st: dict[str, Any] = {
        "watchers": 0,
        "watchers_heard": 0,  # got at least one message (a heartbeat every 20 s, or a ref)
        "heartbeats": 0,
        "ref_updates": 0,
        "watchers_ended": Counter(),  # status code of streams that ended
        "stalled": 0,
        "stalled_ended": Counter(),
    }
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    hold = asyncio.Event()  # never set: the stalled uploads wait on it

    async def watcher(stub: Any, token: str) -> None:
        heard = False
        try:
            async for ref in stub.WatchRefs(pb.WatchRefsRequest(), metadata=_md(token)):
                st["ref_updates" if ref.name else "heartbeats"] += 1
                if not heard:
                    heard = True
                    st["watchers_heard"] += 1
            st["watchers_ended"]["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            st["watchers_ended"][exc.code().name] += 1

    async def stalled(stub: Any, token: str) -> None:
        async def requests() -> Any:
            header = pb.PackHeader(size=STALLED_PACK, sha256=os.urandom(32))
            yield pb.UploadPackRequest(header=header)
            await hold.wait()

        try:
            await stub.UploadPack(requests(), metadata=_md(token))
            st["stalled_ended"]["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            st["stalled_ended"][exc.code().name] += 1

    def status(**extra: Any) -> str:
        doc = {k: dict(v) if isinstance(v, Counter) else v for k, v in st.items()}
        return json.dumps({"t": time.time(), **doc, **extra}) + "\n"

    with open(out, "w", buffering=1) as f:
        f.write(json.dumps({"anysync": anysync.__file__}) + "\n")
        plan = [("watch", i) for i in range(spec["watchers"])]
        plan += [("stall", i) for i in range(spec["stalled"])]
        t0 = time.monotonic()
        for n, (kind, i) in enumerate(plan):
            if stopping.is_set():
                break
            ch = grpc.aio.secure_channel(spec["address"], creds, options=options)
            channels.append(ch)
            stub = rpc.StorageStub(ch)
            token = tokens[i % len(tokens)]
            if kind == "watch":
                tasks.append(asyncio.create_task(watcher(stub, token)))
                st["watchers"] += 1
            else:
                tasks.append(asyncio.create_task(stalled(stub, token)))
                st["stalled"] += 1
            if n % OPEN_BATCH == OPEN_BATCH - 1:
                await asyncio.sleep(0.05)
        f.write(status(ready=True, open_s=round(time.monotonic() - t0, 2)))
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 2.0)
            f.write(status())
        f.write(status(final=True))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
    return 0


async def _storm(spec: dict[str, Any], out: Path) -> int:
    """Storms of parallel UploadPack streams plus large FindBlobs calls."""
    import grpc
    import grpc.aio

    import anysync
    from anysync.v1 import anysync_pb2 as pb
    from anysync.v1 import anysync_pb2_grpc as rpc

    creds, options = _channel_args(spec, own_connection=True)
    md = _md(spec["tokens"][0])
    n_up, n_find, mib = spec["uploads"], spec["find_calls"], spec["pack_mib"]
    up_ch = [grpc.aio.secure_channel(spec["address"], creds, options=options) for _ in range(n_up)]
    fb_ch = [
        grpc.aio.secure_channel(spec["address"], creds, options=options) for _ in range(n_find)
    ]
    known: list[bytes] = []
    rnd = random.Random(12)

    async def upload(stub: Any, header: Any, block: bytes) -> tuple[str, float, int]:
        async def requests() -> Any:
            yield pb.UploadPackRequest(header=header)
            for _ in range(mib):
                yield pb.UploadPackRequest(data=block)

        t0 = time.perf_counter()
        try:
            await stub.UploadPack(requests(), metadata=md, timeout=300)
            return "OK", time.perf_counter() - t0, 0
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, time.perf_counter() - t0, 0

    async def find(stub: Any, ids: list[bytes]) -> tuple[str, float, int]:
        t0 = time.perf_counter()
        try:
            resp = await stub.FindBlobs(pb.FindBlobsRequest(blob_ids=ids), metadata=md, timeout=120)
            return "OK", time.perf_counter() - t0, len(resp.found)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, time.perf_counter() - t0, 0

    with open(out, "w", buffering=1) as f:
        f.write(json.dumps({"anysync": anysync.__file__}) + "\n")
        for s in range(spec["storms"]):
            # Prepared before the clock starts: distinct bytes and blob IDs per pack.
            packs = []
            fresh: list[bytes] = []
            for _ in range(n_up):
                block = os.urandom(MiB)
                h = hashlib.sha256()
                for _ in range(mib):
                    h.update(block)
                ids = [os.urandom(32) for _ in range(mib * MiB // STORM_BLOB)]
                fresh += ids
                entries = [
                    pb.PackEntry(blob_id=b, offset=k * STORM_BLOB, length=STORM_BLOB)
                    for k, b in enumerate(ids)
                ]
                header = pb.PackHeader(size=mib * MiB, sha256=h.digest(), entries=entries)
                packs.append((header, block))
            queries = []
            for _ in range(n_find):
                half = min(len(known), spec["find_ids"] // 2)
                ids = rnd.sample(known, half) + [
                    os.urandom(32) for _ in range(spec["find_ids"] - half)
                ]
                queries.append(ids)
            t0 = time.perf_counter()
            jobs = [upload(rpc.StorageStub(up_ch[i]), *packs[i]) for i in range(n_up)]
            finds = [find(rpc.StorageStub(fb_ch[i]), queries[i]) for i in range(n_find)]
            results: list[tuple[str, float, int]] = await asyncio.gather(*jobs, *finds)
            seconds = time.perf_counter() - t0
            ups, fbs = results[:n_up], results[n_up:]
            known += fresh
            f.write(
                json.dumps(
                    {
                        "storm": s,
                        "t": time.time(),
                        "seconds": round(seconds, 3),
                        "uploads_ok": sum(1 for r in ups if r[0] == "OK"),
                        "upload_codes": dict(Counter(r[0] for r in ups)),
                        "upload_s": [round(r[1], 3) for r in ups],
                        "upload_bytes": n_up * mib * MiB,
                        "find_ok": sum(1 for r in fbs if r[0] == "OK"),
                        "find_codes": dict(Counter(r[0] for r in fbs)),
                        "find_s": [round(r[1], 3) for r in fbs],
                        "find_found": [r[2] for r in fbs],
                    }
                )
                + "\n"
            )
            await asyncio.sleep(STORM_PAUSE_S)
    await asyncio.gather(*(ch.close() for ch in up_ch + fb_ch), return_exceptions=True)
    return 0


async def _relay(spec: dict[str, Any], out: Path) -> int:
    """A TCP relay to the server that connects from a new loopback source address
    (127.1.0.1, 127.1.0.2, …) every `per` connections: TLS passes through untouched,
    and the server sees distinct client addresses."""
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    host, _, port = spec["target"].rpartition(":")
    base = int(ipaddress.IPv4Address("127.1.0.1"))
    st = {"connections": 0, "open": 0, "failed": 0, "bytes": 0}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                st["bytes"] += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        n = st["connections"]
        st["connections"] += 1
        source = str(ipaddress.IPv4Address(base + n // int(spec["per"])))
        try:
            s_reader, s_writer = await asyncio.open_connection(
                host, int(port), local_addr=(source, 0)
            )
        except OSError:
            st["failed"] += 1
            c_writer.close()
            return
        st["open"] += 1
        try:
            await asyncio.gather(pipe(c_reader, s_writer), pipe(s_reader, c_writer))
        finally:
            st["open"] -= 1
            for w in (c_writer, s_writer):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    with open(out, "w", buffering=1) as f:
        f.write(json.dumps({"port": server.sockets[0].getsockname()[1]}) + "\n")
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 5.0)
            f.write(json.dumps({"t": time.time(), **st}) + "\n")
    server.close()
    return 0


def run_role(name: str, spec_path: Path, out: Path) -> int:
    spec = json.loads(spec_path.read_text())
    if name == "prober":
        return role_prober(spec, out)
    if name == "load":
        return asyncio.run(_load(spec, out))
    if name == "storm":
        return asyncio.run(_storm(spec, out))
    if name == "relay":
        return asyncio.run(_relay(spec, out))
    raise SystemExit(f"unknown role {name}")


# --- report ---------------------------------------------------------------------------


def _mib(v: int | None) -> float | None:
    return None if not v else v / MiB


def metrics(r: dict[str, Any], mode: dict[str, Any]) -> dict[str, Any]:
    """The table's figures of one revision (None: not measured)."""
    b, p, gen = r.get("baseline", {}), r.get("probe", {}), r.get("load_generator", {})
    storms = r.get("storms", [])
    out: dict[str, Any] = {
        "idle_rss_mib": _mib(r.get("idle_rss")),
        "baseline_PreLogin_p50_ms": b.get("PreLogin_p50_ms"),
        "baseline_Whoami_p50_ms": b.get("Whoami_p50_ms"),
        "baseline_calls_per_s": b.get("answered_per_s"),
    }
    for method in ("PreLogin", "Whoami"):
        for q in (50, 99):
            key = f"{method}_p{q}_ms"
            out[key] = p.get(key)
            if p.get(f"{method}_p{q}_timed_out"):
                out[key] = math.inf
    out |= {
        "probe_answered": p.get("answered"),
        "probe_timed_out": p.get("timed_out"),
        "probe_refused": p.get("refused"),
        "probe_other_errors": p.get("other_errors"),
        "probe_calls_per_s": p.get("answered_per_s"),
        "backups_ok": r.get("backups_ok"),
        "backup_mb_s": r.get("backup_mb_s"),
        "watchers_heard": gen.get("watchers_heard"),
        "watchers_ended": sum(gen.get("watchers_ended", {}).values()) if gen else None,
        "stalled_ended": sum(gen.get("stalled_ended", {}).values()) if gen else None,
        "load_server_cpu_s": r.get("load_server_cpu_s"),
        "load_peak_rss_mib": _mib(max(r.get("load_peak_hwm", 0), r.get("load_peak_sampled", 0))),
        "settled_rss_mib": _mib(r.get("settled_rss")),
        "storm_peak_rss_mib": _mib(max(r.get("storm_peak_hwm", 0), r.get("storm_peak_sampled", 0))),
        "storm_settled_rss_mib": _mib(r.get("storm_settled_rss")),
        "storm_uploads_ok": sum(s["uploads_ok"] for s in storms) if storms else None,
        "storm_find_ok": sum(s["find_ok"] for s in storms) if storms else None,
        "storm_upload_mb_s": (
            sum(s["upload_bytes"] for s in storms) / sum(s["seconds"] for s in storms) / 1e6
            if storms
            else None
        ),
        "storm_find_max_ms": (
            max(max(s["find_s"], default=0) for s in storms) * 1000 if storms else None
        ),
    }
    return out


def rows(mode: dict[str, Any]) -> list[tuple[str, str]]:
    n, m, k = mode["clients"], mode["watchers"], mode["stalled"]
    ups = mode["storms"] * mode["storm_uploads"]
    finds = mode["storms"] * mode["find_blobs_calls"]
    return [
        ("idle_rss_mib", "idle RSS, one account (MiB)"),
        ("baseline_PreLogin_p50_ms", "no load: PreLogin p50 (ms)"),
        ("baseline_Whoami_p50_ms", "no load: Whoami p50 (ms)"),
        ("baseline_calls_per_s", "no load: prober calls answered/s"),
        ("PreLogin_p50_ms", "load: PreLogin p50 (ms)"),
        ("PreLogin_p99_ms", "load: PreLogin p99 (ms)"),
        ("Whoami_p50_ms", "load: Whoami p50 (ms)"),
        ("Whoami_p99_ms", "load: Whoami p99 (ms)"),
        ("probe_answered", "load: prober calls answered"),
        ("probe_timed_out", f"load: prober calls timed out ({DEADLINE_S:.0f} s)"),
        ("probe_refused", "load: prober calls refused (RESOURCE_EXHAUSTED)"),
        ("probe_other_errors", "load: prober calls failed otherwise"),
        ("probe_calls_per_s", "load: prober calls answered/s"),
        ("backups_ok", f"load: backups completed (of {n})"),
        ("backup_mb_s", f"load: backup throughput, {n} clients together (MB/s)"),
        ("watchers_heard", f"load: watchers that got a heartbeat or ref (of {m})"),
        ("watchers_ended", "load: watcher streams ended by the server"),
        ("stalled_ended", f"load: stalled uploads ended by the server (of {k})"),
        ("load_server_cpu_s", "load: server CPU (s)"),
        ("load_peak_rss_mib", "load: peak RSS (MiB)"),
        ("settled_rss_mib", f"settled RSS, {mode['settle']:.0f} s after the load (MiB)"),
        ("storm_peak_rss_mib", "storms: peak RSS (MiB)"),
        ("storm_settled_rss_mib", f"storms: RSS {mode['settle']:.0f} s after (MiB)"),
        ("storm_uploads_ok", f"storms: uploads stored (of {ups})"),
        ("storm_upload_mb_s", "storms: upload throughput (MB/s)"),
        ("storm_find_ok", f"storms: FindBlobs answered (of {finds})"),
        ("storm_find_max_ms", "storms: slowest FindBlobs (ms)"),
    ]


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if v == math.inf:
        return f"≥ {DEADLINE_S * 1000:,.0f} (timeout)"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"


def _ratio(new: Any, old: Any) -> str:
    if new is None or old is None or math.inf in (new, old) or not old:
        return "—"
    return f"{new / old:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    mach, mode, runs = doc["machine"], doc["mode"], doc["runs"]
    labels = [r["label"] for r in runs]
    figs = [metrics(r, mode) for r in runs]
    lines = [
        f"# Server load: {' vs '.join(labels)} ({mode['name']}, {doc['date']})",
        "",
        "**Measured on a shared machine**: other engineers' test runs used the same 2 cores "
        "meanwhile, so every figure carries noise (see the load averages); rerun on a quiet "
        "machine before drawing fine conclusions.",
        "",
        f"Machine: {mach['cpu']}, {mach['nproc']} cores, {mach['ram_gib']:.1f} GiB RAM, "
        f"{mach['os']}, Python {mach['python']}. Load average at start {doc['loadavg_start']}, "
        f"at end {doc['loadavg_end']}.",
        "",
        "Code: "
        + "; ".join(f"**{r['label']}** = {r['describe']}" for r in runs)
        + ". Every process (server, CLI clients, load generators) runs that revision's src/ "
        "via PYTHONPATH.",
        "",
        f"Load: {mode['clients']} clients each back up {doc['data_mb']:.0f} MB (own accounts, "
        f"`anysync backup`, real KDF); {mode['watchers']:,} idle WatchRefs streams and "
        f"{mode['stalled']} stalled UploadPack streams (header, then nothing), each on its "
        "own TLS connection, opened before the clients start, spread over accounts of their "
        f"own ({mode.get('streams_per_account', '?')} streams each) and reaching the server "
        "through a relay that gives every "
        f"{mode.get('streams_per_address', '?')} connection(s) a loopback source address of "
        "their own (127.1.x.y); a prober calls Whoami in a loop and PreLogin every "
        f"{mode.get('prelogin_every', '?')} s (servers rate-limit it per address), one call "
        f"at a time, {DEADLINE_S:.0f} s deadline each, over one connection from 127.0.0.1. "
        "The load phase lasts at "
        f"least {mode['seconds']:.0f} s and until the backups end, at most "
        f"{mode['backup_cap']:.0f} s. Storms (fresh server, one account): {mode['storms']} × "
        f"{mode['storm_uploads']} parallel {mode['storm_pack_mib']} MiB uploads + "
        f"{mode['find_blobs_calls']} FindBlobs of {mode['find_blobs_ids']:,} IDs, "
        f"{STORM_PAUSE_S:.0f} s apart. Peak RSS = max(VmHWM after a reset at the phase's "
        f"start, VmRSS sampled every {SAMPLE_S} s); settled = VmRSS {mode['settle']:.0f} s "
        "after the phase.",
        "",
        "A percentile shown as “≥ 5,000 (timeout)” lands on a call that got no answer "
        "within the deadline: calls that timed out count as infinitely slow.",
        "",
        *[f"{note}\n" for note in doc.get("notes", [])],
    ]
    head = "| figure | " + " | ".join(labels)
    sep = "|---|" + "---|" * len(labels)
    if len(runs) > 1:
        head += " | " + " | ".join(f"{x}/{labels[0]}" for x in labels[1:])
        sep += "---|" * (len(labels) - 1)
    lines += [head + " |", sep]
    for key, label in rows(mode):
        cells = [_fmt(f.get(key)) for f in figs]
        cells += [_ratio(f.get(key), figs[0].get(key)) for f in figs[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Per revision:", ""]
    for r in runs:
        lines.append(f"- **{r['label']}** ({r.get('elapsed_s', '?')} s in all): ")
        for b in r.get("backups", []):
            secs = "—" if b["seconds"] is None else f"{b['seconds']:.1f} s"
            err = b.get("stderr_tail", "").strip().splitlines()
            tail = f" ({err[-1][:160]})" if b["exit"] != 0 and err else ""
            if b.get("killed_at_cap"):
                tail += " (still running at the cap: killed)"
            lines.append(f"  backup {b['client']}: exit {b['exit']}, {secs}{tail}")
        gen = r.get("load_generator", {})
        if gen:
            lines.append(
                f"  load generator: {gen.get('watchers')} watchers opened in "
                f"{gen.get('open_s', '?')} s, ended {gen.get('watchers_ended')}, stalled "
                f"uploads ended {gen.get('stalled_ended')}; {gen.get('heartbeats')} "
                f"heartbeats and {gen.get('ref_updates')} ref updates received in all"
            )
        relay = r.get("relay", {})
        if relay:
            lines.append(
                f"  relay: {relay.get('connections')} connections ({relay.get('failed')} "
                f"failed) for {r.get('watch_accounts')} watcher accounts"
            )
        codes = r.get("probe", {}).get("codes")
        if codes:
            lines.append(f"  prober under load: {codes} in {r['probe']['seconds']} s")
        for s in r.get("storms", []):
            lines.append(
                f"  storm {s['storm'] + 1}: {s['seconds']:.1f} s, uploads {s['upload_codes']}, "
                f"FindBlobs {s['find_codes']} (found {sum(s['find_found']):,})"
            )
        for e in r.get("errors", []):
            lines.append(f"  ERROR {e}")
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument(
        "--code",
        action="append",
        metavar="REV_OR_PATH",
        help="git revision, `worktree`, or a directory with src/anysync; repeat for "
        f"columns, the first is the baseline of the ratios (default {OLD_REV} and worktree)",
    )
    p.add_argument(
        "--quick", action="store_true", help="N=2, M=200, K=20, small storms, 10 s settle"
    )
    p.add_argument("--clients", type=int, help="N backing-up clients (default 4, quick 2)")
    p.add_argument("--watchers", type=int, help="M idle WatchRefs streams (1000, quick 200)")
    p.add_argument("--stalled", type=int, help="K stalled UploadPack streams (100, quick 20)")
    p.add_argument("--seconds", type=float, help="minimum load phase (90, quick 25)")
    p.add_argument("--backup-cap", type=float, help="maximum load phase (300, quick 60)")
    p.add_argument("--settle-seconds", type=float, help="wait before settled RSS (60, quick 10)")
    p.add_argument("--storms", type=int, help="upload storms (3)")
    p.add_argument("--storm-uploads", type=int, help="parallel uploads per storm (16, quick 4)")
    p.add_argument("--storm-pack-mib", type=int, help="size of a storm upload (64, quick 16)")
    p.add_argument(
        "--streams-per-account",
        type=int,
        help="watchers + stalled uploads per account of their own (25)",
    )
    p.add_argument(
        "--streams-per-address",
        type=int,
        help="watcher/stalled connections per relay source address (1)",
    )
    p.add_argument("--prelogin-every", type=float, help="the prober's PreLogin pace, s (2.5)")
    p.add_argument(
        "--compare-with",
        type=Path,
        metavar="JSON",
        help="put the revisions of an earlier result first (e.g. the old server's run)",
    )
    p.add_argument("--work-dir", type=Path, default=BENCH / "work" / "server-load")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--name", help="result file stem (default server-load[-quick]-DATE)")
    p.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite JSON's .md")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_mode(args: argparse.Namespace) -> Mode:
    mode = QUICK if args.quick else FULL
    overrides = {
        "clients": args.clients,
        "watchers": args.watchers,
        "stalled": args.stalled,
        "seconds": args.seconds,
        "backup_cap": args.backup_cap,
        "settle": args.settle_seconds,
        "storms": args.storms,
        "storm_uploads": args.storm_uploads,
        "storm_pack_mib": args.storm_pack_mib,
        "streams_per_account": args.streams_per_account,
        "streams_per_address": args.streams_per_address,
        "prelogin_every": args.prelogin_every,
    }
    mode = dataclasses.replace(mode, **{k: v for k, v in overrides.items() if v is not None})
    if mode.backup_cap < mode.seconds:
        mode = dataclasses.replace(mode, backup_cap=mode.seconds)
    return mode


def dataset(mode: Mode, work: Path) -> DataSets:
    quarter = max(1, mode.d2_mib // 4)
    scale = Scale(
        f"load-{mode.d1_files}-{mode.d2_mib}",
        d1_files=mode.d1_files,
        d2_files={
            "video.mkv": ("media", quarter),
            "photos.tar": ("media", quarter),
            "server.log": ("text", quarter),
            "dump.sql": ("text", quarter),
        },
        text_corpus_mib=32,
        binary_corpus_mib=16,
        append_mib=0,
    )
    return DataSets(work / f"data-{scale.name}", scale)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM runs the same cleanup as Ctrl-C (every started process is stopped)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _unique(labels: list[str], label: str) -> str:
    n, out = 1, label
    while out in labels:
        n += 1
        out = f"{label}#{n}"
    return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def write(doc: dict[str, Any], results: Path, stem: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    doc["figures"] = {r["label"]: metrics(r, doc["mode"]) for r in doc["runs"]}
    (results / f"{stem}.json").write_text(json.dumps(_json_safe(doc), indent=1) + "\n")
    (results / f"{stem}.md").write_text(markdown(doc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return run_role(args.role, args.spec, args.out)
    if args.rerender:
        saved = json.loads(args.rerender.read_text())
        args.rerender.with_suffix(".md").write_text(markdown(saved))
        return 0
    mode = make_mode(args)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    earlier: list[dict[str, Any]] = []
    notes: list[str] = []
    if args.compare_with:
        prev = json.loads(args.compare_with.read_text())
        earlier = prev["runs"]
        for r in earlier:
            r["describe"] += f" (from {args.compare_with.name}, measured {prev['date']})"
        if prev["mode"] != dataclasses.asdict(mode):
            notes.append(
                f"**Note**: the columns from {args.compare_with.name} were measured with "
                f"other settings ({prev['mode']}); the “of N” counts in the labels are this "
                "run's."
            )
    specs = args.code or ([] if earlier else [OLD_REV]) + ["worktree"]
    data = dataset(mode, work)
    t = time.monotonic()
    made = data.ensure()
    log(
        f"data {'generated' if made else 'reused'} in {time.monotonic() - t:.1f} s: "
        f"{(data.info.d1_bytes + data.info.d2_bytes) / 1e6:.0f} MB per client"
    )
    doc: dict[str, Any] = {
        "kind": "server-load",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": dataclasses.asdict(mode),
        "machine": machine(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "data_mb": (data.info.d1_bytes + data.info.d2_bytes) / 1e6,
        "data": {"d1_files": data.info.d1_files, "d2_bytes": data.info.d2_bytes},
        "settings": {"deadline_s": DEADLINE_S, "sample_s": SAMPLE_S, "idle_wait_s": IDLE_WAIT_S},
        "runs": list(earlier),
        "notes": notes,
    }
    today = datetime.date.today().isoformat()
    stem = args.name or (f"server-load-quick-{today}" if args.quick else f"server-load-{today}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="server-load-code-") as tmp:
        codes: list[Code] = []
        for i, spec in enumerate(specs):
            code = export_code(spec, Path(tmp) / f"c{i}")
            code.label = _unique(
                [r["label"] for r in earlier] + [c.label for c in codes], code.label
            )
            codes.append(code)
            log(f"code {code.label}: {code.describe}")
        with _terminate_as_interrupt(), Sampler() as sampler:
            try:
                for i, code in enumerate(codes):
                    log(f"revision {code.label} ({i + 1}/{len(codes)})")
                    rev_work = work / f"run-{i}"
                    shutil.rmtree(rev_work, ignore_errors=True)
                    # Servers of every revision have the same names: a peak must not
                    # carry over from the revision before.
                    sampler.peaks.clear()
                    rev = Revision(code, mode, data, rev_work, sampler)
                    doc["runs"].append(rev.res)  # also when interrupted halfway
                    res = rev.run()
                    res["rss_series"] = list(sampler.series)
                    sampler.series.clear()
                    ok = ok and not res["errors"]
                    log(f"revision {code.label} done in {res['elapsed_s']} s")
            except KeyboardInterrupt:
                log("interrupted; writing what was measured")
                doc["interrupted"] = True
                ok = False
    doc["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    write(doc, args.results_dir, stem)
    log(f"wrote {args.results_dir / stem}.{{md,json}} in {doc['elapsed_s']} s")
    print(markdown(doc))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
