"""Sync benchmark: AnySync against Syncthing, two devices on loopback, in the same run.

    python bench/sync_bench.py --quick   # ~1,000 small files + 50 MB, 5 latency samples
    python bench/sync_bench.py           # full: 10,000 small files + 500 MB, 20 samples

For each tool: two devices A and B (AnySync: two `anysync sync run --watch` clients of
one `anysync-server`; Syncthing: two `syncthing serve` instances configured through the
REST API), both watching, everything on 127.0.0.1. Measured on B's side, from the
moment a change lands in A's folder (an atomic rename from a staging dir next to it):

1. propagation latency of one saved file (median, p95 over N samples),
2. time until B holds N new small files (1-8 KiB) with the right content,
3. time until B holds one big file (500 MB, quick 50 MB) with the right SHA-256,

and the peak RSS of each side's process tree (sampled every 50 ms). See bench/README.md,
section "Sync against Syncthing". Exit status 0 only if every figure was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.main import head_snapshot, machine
from bench.measure import tree_rss
from bench.tools import base_env, free_port

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-password-not-secret"
SAMPLE_S = 0.05
LATENCY_POLL_S = 0.01
BULK_POLL_S = 0.05
ST_WATCH_DELAY_S = 1  # Syncthing's fsWatcherDelayS (its default is 10)
ST_RESCAN_S = 3600


@dataclass(frozen=True)
class Mode:
    name: str
    latency_samples: int
    loaded_samples: int  # latency again, once the small files are in the folder
    small_files: int
    big_bytes: int
    pause_s: float


QUICK = Mode("quick", 5, 3, 1_000, 50 * 1000 * 1000, 2.0)
FULL = Mode("full", 20, 5, 10_000, 500 * 1000 * 1000, 2.0)


def log(msg: str) -> None:
    print(f"[sync-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timeout(Exception):
    pass


# --- processes and memory ---------------------------------------------------------


def spawn(argv: list[str], env: dict[str, str], logfile: Path) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() reaches its children
        )


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Sampler:
    """Peak RSS per named process tree and per phase, sampled every 50 ms."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs = procs
        self.phase = "setup"
        self.peaks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            phase = self.peaks.setdefault(self.phase, {})
            for name, proc in self.procs.items():
                phase[name] = max(phase.get(name, 0), tree_rss(proc))
            self._stop.wait(SAMPLE_S)


# --- the two tools -------------------------------------------------------------------


class Side(ABC):
    """One tool's pair of devices, A and B, each syncing one folder."""

    name: str

    def __init__(self, work: Path) -> None:
        self.work = work
        self.folder_a = work / "A-folder"
        self.folder_b = work / "B-folder"
        self.stage = work / "A-stage"  # same filesystem as A's folder: rename is atomic
        self.logs = work / "logs"
        for d in (self.folder_a, self.folder_b, self.stage, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def procs(self) -> dict[str, psutil.Process]: ...

    @abstractmethod
    def stop(self) -> None: ...

    def check_alive(self) -> None:
        for name, proc in self.procs().items():
            try:
                alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            if not alive:
                raise RuntimeError(f"{self.name} {name} exited; logs in {self.logs}")


class AnySyncSide(Side):
    name = "anysync"

    def __init__(self, work: Path, code: Path | None) -> None:
        super().__init__(work)
        self.code = code
        self.port = free_port()
        self.server_home = work / "server"
        self.server: subprocess.Popen[bytes] | None = None
        self.clients: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        env = base_env() | {"PYTHONUNBUFFERED": "1"}  # real KDF: no ANYSYNC_TESTONLY_*
        return env | ({"PYTHONPATH": str(self.code)} if self.code else {})

    def client_env(self, dev: str) -> dict[str, str]:
        home = self.work / f"{dev}-home"
        return self.env() | {"ANYSYNC_HOME": str(home), "ANYSYNC_PASSWORD": PASSWORD}

    def _run(self, argv: list[str], env: dict[str, str]) -> str:
        out = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}:\n{out.stderr}")
        return out.stdout

    def _admin(self, *args: str) -> str:
        srv = str(BIN / "anysync-server")
        return self._run([srv, "--home", str(self.server_home), *args], self.env()).strip()

    def _client(self, dev: str, *args: str) -> str:
        return self._run([str(BIN / "anysync"), *args], self.client_env(dev))

    def start(self) -> None:
        self._admin("init")
        address = f"127.0.0.1:{self.port}"
        srv = str(BIN / "anysync-server")
        logfile = self.logs / "server.log"
        argv = [srv, "--home", str(self.server_home), "run", "--listen", address]
        self.server = spawn(argv, self.env(), logfile)
        deadline = time.monotonic() + 60
        while f"listening on {address}".encode() not in logfile.read_bytes():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"anysync-server did not start:\n{logfile.read_text()}")
            time.sleep(0.05)
        invite, fp = self._admin("invite", "create"), self._admin("fingerprint")
        email = "bench@example.invalid"
        common = ["--server", address, "--email", email, "--fingerprint", fp]
        self._client("A", "signup", *common, "--invite", invite)
        self._client("B", "login", *common)
        self._client("A", "sync", "add", str(self.folder_a), "--name", "Bench")
        self._client("B", "sync", "add", str(self.folder_b), "--name", "Bench")
        for dev in ("A", "B"):
            argv = [str(BIN / "anysync"), "sync", "run", "--watch"]
            self.clients[dev] = spawn(argv, self.client_env(dev), self.logs / f"{dev}-watch.log")

    def procs(self) -> dict[str, psutil.Process]:
        out = {dev: psutil.Process(p.pid) for dev, p in self.clients.items()}
        if self.server is not None:
            out["server"] = psutil.Process(self.server.pid)
        return out

    def stop(self) -> None:
        for p in self.clients.values():
            stop(p)
        stop(self.server)

    def version(self) -> str:
        out = subprocess.run(
            [str(BIN / "anysync"), "--version"], env=self.env(), capture_output=True, text=True
        )
        return (out.stdout or out.stderr).strip() or "?"


class SyncthingSide(Side):
    name = "syncthing"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.keys: dict[str, str] = {}  # API keys, read from each config.xml
        self.gui = {dev: free_port() for dev in ("A", "B")}
        self.listen = {dev: free_port() for dev in ("A", "B")}
        self.ids: dict[str, str] = {}
        self.proc: dict[str, subprocess.Popen[bytes]] = {}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy

    def home(self, dev: str) -> Path:
        return self.work / f"{dev}-st-home"

    def api(self, dev: str, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gui[dev]}{path}", data=data, method=method
        )
        req.add_header("X-API-Key", self.keys[dev])
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with self._opener.open(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def _env(self) -> dict[str, str]:
        drop = ("STNO", "STGUI", "STHOME", "STCONF", "STDATA")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        return env | {"STNOUPGRADE": "1", "STNORESTART": "1", "STNODEFAULTFOLDER": "1"}

    def _serve(self, dev: str) -> None:
        argv = [
            "syncthing", "serve", f"--home={self.home(dev)}", "--no-browser", "--no-restart",
            "--no-upgrade", "--no-default-folder",
            f"--gui-address=http://127.0.0.1:{self.gui[dev]}",
        ]  # fmt: skip
        self.proc[dev] = spawn(argv, self._env(), self.logs / f"{dev}-syncthing.log")
        deadline = time.monotonic() + 60
        while True:
            if self.proc[dev].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"syncthing {dev} did not start; see {self.logs}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                self.ids[dev] = self.api(dev, "GET", "/rest/system/status")["myID"]
                return
            time.sleep(0.1)

    def _options(self, dev: str) -> dict[str, Any]:
        return {
            "listenAddresses": [f"tcp://127.0.0.1:{self.listen[dev]}"],
            "globalAnnounceEnabled": False,
            "localAnnounceEnabled": False,
            "relaysEnabled": False,
            "natEnabled": False,
            "urAccepted": -1,
            "crashReportingEnabled": False,
            "autoUpgradeIntervalH": 0,
            "startBrowser": False,
        }

    def _loopback_only(self, dev: str) -> None:
        """Write the network options into the generated config.xml before the first start,
        so that no instance ever listens beyond 127.0.0.1 or looks for relays/discovery
        (the same options are set again through the REST API afterwards); read the API
        key from it."""
        path = self.home(dev) / "config.xml"
        tree = ElementTree.parse(path)
        options = tree.getroot().find("options")
        gui = tree.getroot().find("gui")
        if options is None or gui is None:
            raise RuntimeError(f"unexpected syncthing config: {path}")
        for old in options.findall("listenAddress"):
            options.remove(old)
        for key, value in self._options(dev).items():
            if key == "listenAddresses":
                for addr in value:
                    ElementTree.SubElement(options, "listenAddress").text = addr
                continue
            found = options.find(key)
            el = found if found is not None else ElementTree.SubElement(options, key)
            el.text = str(value).lower() if isinstance(value, bool) else str(value)
        address, apikey = gui.find("address"), gui.find("apikey")
        if address is None or apikey is None or not apikey.text:
            raise RuntimeError(f"unexpected syncthing config: {path}")
        address.text = f"127.0.0.1:{self.gui[dev]}"
        self.keys[dev] = apikey.text
        tree.write(path)

    def start(self) -> None:
        for dev in ("A", "B"):
            out = subprocess.run(
                ["syncthing", "generate", f"--home={self.home(dev)}", "--no-default-folder"],
                env=self._env(), capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(f"syncthing generate failed:\n{out.stdout}{out.stderr}")
            self._loopback_only(dev)
            self._serve(dev)
        for dev, other in (("A", "B"), ("B", "A")):
            self.api(dev, "PATCH", "/rest/config/options", self._options(dev))
            peer = {
                "deviceID": self.ids[other],
                "name": other,
                "addresses": [f"tcp://127.0.0.1:{self.listen[other]}"],
            }
            self.api(dev, "POST", "/rest/config/devices", peer)
            folder = self.folder_a if dev == "A" else self.folder_b
            (folder / ".stfolder").mkdir(exist_ok=True)
            self.api(dev, "POST", "/rest/config/folders", {
                "id": "bench",
                "label": "Bench",
                "path": str(folder),
                "type": "sendreceive",
                "devices": [{"deviceID": self.ids["A"]}, {"deviceID": self.ids["B"]}],
                "fsWatcherEnabled": True,
                "fsWatcherDelayS": ST_WATCH_DELAY_S,
                "rescanIntervalS": ST_RESCAN_S,
            })  # fmt: skip
        for dev in ("A", "B"):  # new listen address: restart if syncthing asks for it
            if self.api(dev, "GET", "/rest/config/restart-required").get("requiresRestart"):
                log(f"syncthing {dev}: restart required by the config change; restarting")
                stop(self.proc[dev])
                self._serve(dev)
        deadline = time.monotonic() + 120
        while True:
            conns = self.api("A", "GET", "/rest/system/connections")["connections"]
            states = [self.api(d, "GET", "/rest/db/status?folder=bench").get("state") for d in "AB"]
            if conns.get(self.ids["B"], {}).get("connected") and states == ["idle", "idle"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"syncthing A and B did not connect: {conns} {states}")
            time.sleep(0.2)

    def procs(self) -> dict[str, psutil.Process]:
        return {dev: psutil.Process(p.pid) for dev, p in self.proc.items()}

    def stop(self) -> None:
        for p in self.proc.values():
            stop(p)

    def version(self) -> str:
        out = subprocess.run(["syncthing", "--version"], capture_output=True, text=True)
        return out.stdout.strip() or "?"


# --- the measurements -------------------------------------------------------------


def _poll_file(path: Path, want: bytes, timeout_s: float) -> float:
    """Wait until `path` holds exactly `want`; return the perf_counter() of that moment."""
    deadline = time.perf_counter() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if path.read_bytes() == want:
                return time.perf_counter()
        if time.perf_counter() > deadline:
            raise Timeout(f"{path.name} did not arrive within {timeout_s:.0f} s")
        time.sleep(LATENCY_POLL_S)


def one_latency(side: Side, name: str, timeout_s: float) -> float:
    content = f"{name} {secrets.token_hex(16)} {time.time_ns()}\n".encode()
    staged = side.stage / name
    staged.write_bytes(content)
    t0 = time.perf_counter()
    os.rename(staged, side.folder_a / name)
    return _poll_file(side.folder_b / name, content, timeout_s) - t0


def latencies(side: Side, mode: Mode, n: int, prefix: str = "latency") -> list[float]:
    out = []
    for i in range(n):
        side.check_alive()
        dt = one_latency(side, f"{prefix}-{i:03d}.txt", 120)
        log(f"  {side.name} {prefix} {i + 1}/{n}: {dt * 1000:.0f} ms")
        out.append(dt)
        time.sleep(mode.pause_s)
    return out


def _wait_all(root: Path, expected: dict[str, bytes], timeout_s: float, t0: float) -> float:
    """Wait until every relative path under root holds its expected bytes."""
    pending: dict[str, dict[str, bytes]] = {}
    for rel, data in expected.items():
        d, _, f = rel.rpartition("/")
        pending.setdefault(d, {})[f] = data
    deadline = t0 + timeout_s
    last = t0
    while pending:
        for d in list(pending):
            with contextlib.suppress(OSError), os.scandir(root / d) as it:
                for entry in it:
                    want = pending[d].get(entry.name)
                    if want is None or entry.stat().st_size != len(want):
                        continue
                    with contextlib.suppress(OSError):
                        if Path(entry.path).read_bytes() == want:
                            del pending[d][entry.name]
                            last = time.perf_counter()
            if not pending[d]:
                del pending[d]
        if not pending:
            break
        if time.perf_counter() > deadline:
            left = sum(len(v) for v in pending.values())
            raise Timeout(f"{left} of {len(expected)} files missing after {timeout_s:.0f} s")
        time.sleep(BULK_POLL_S)
    return last - t0


def small_files(side: Side, mode: Mode, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    staged = side.stage / "small"
    expected: dict[str, bytes] = {}
    for i in range(mode.small_files):
        rel = f"d{i // 100:03d}/f{i:05d}.dat"
        size = rng.randint(1024, 8192)
        # Half text-like (compressible), half random bytes.
        if i % 2:
            data = rng.randbytes(size)
        else:
            data = (" ".join(f"w{rng.randrange(5000)}" for _ in range(size // 4)) + "\n").encode()
            data = data[:size]
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(data)
        expected[rel] = data
    side.check_alive()
    t0 = time.perf_counter()
    os.rename(staged, side.folder_a / "small")  # one directory, all files at once
    dt = _wait_all(side.folder_b / "small", expected, 1800, t0)
    return {"files": len(expected), "bytes": sum(map(len, expected.values())), "seconds": dt}


def big_file(side: Side, mode: Mode, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    staged = side.stage / "big.bin"
    digest = hashlib.sha256()
    with open(staged, "wb") as f:
        left = mode.big_bytes
        while left:
            piece = rng.randbytes(min(left, 4 << 20))  # all unique: nothing dedups
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    want = digest.hexdigest()
    target = side.folder_b / "big.bin"
    side.check_alive()
    t0 = time.perf_counter()
    os.rename(staged, side.folder_a / "big.bin")
    deadline = t0 + 1800
    while True:
        with contextlib.suppress(OSError):
            if target.stat().st_size == mode.big_bytes:
                seen = time.perf_counter()
                if _sha256(target) == want:
                    return {"bytes": mode.big_bytes, "seconds": seen - t0}
        if time.perf_counter() > deadline:
            raise Timeout("big file did not arrive within 1800 s")
        time.sleep(BULK_POLL_S)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(4 << 20):
            h.update(piece)
    return h.hexdigest()


def run_side(side: Side, mode: Mode, seed: int) -> dict[str, Any]:
    result: dict[str, Any] = {"tool": side.name, "errors": []}
    t = time.perf_counter()
    try:
        side.start()
        result["setup_s"] = time.perf_counter() - t
        with Sampler(side.procs()) as sampler:
            sampler.phase = "warmup"
            result["warmup_s"] = one_latency(side, "warmup.txt", 300)
            log(f"  {side.name} ready; warm-up file took {result['warmup_s']:.2f} s")
            time.sleep(mode.pause_s)
            for phase, fn in (
                ("latency", lambda: latencies(side, mode, mode.latency_samples)),
                ("small", lambda: small_files(side, mode, seed)),
                ("latency_loaded", lambda: latencies(side, mode, mode.loaded_samples, "loaded")),
                ("big", lambda: big_file(side, mode, seed + 1)),
            ):
                sampler.phase = phase
                try:
                    result[phase] = fn()
                except (Timeout, RuntimeError, OSError) as exc:
                    result["errors"].append(f"{phase}: {exc}")
                    log(f"  {side.name} {phase} FAILED: {exc}")
                    if not isinstance(exc, Timeout):
                        break
                else:
                    if phase in ("small", "big"):
                        log(f"  {side.name} {phase}: {result[phase]['seconds']:.2f} s")
                time.sleep(mode.pause_s)
            sampler.phase = "idle"
            time.sleep(0.2)
        result["peak_rss"] = sampler.peaks
    except (Timeout, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        result["errors"].append(f"setup: {exc}")
        log(f"  {side.name} FAILED: {exc}")
    finally:
        side.stop()
    return result


# --- summary and report -------------------------------------------------------------


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]  # nearest rank


MEASURED = ("latency", "small", "latency_loaded", "big")


def summarize(rounds: list[dict[str, Any]], tools: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        rs = [r for r in rounds if r["tool"] == tool]
        lat = [x for r in rs for x in r.get("latency", [])]
        loaded = [x for r in rs for x in r.get("latency_loaded", [])]
        s: dict[str, Any] = {
            "latency_median_s": statistics.median(lat) if lat else None,
            "latency_p95_s": p95(lat) if lat else None,
            "latency_samples": len(lat),
            "latency_loaded_median_s": statistics.median(loaded) if loaded else None,
        }
        for phase in ("small", "big"):
            xs = [r[phase]["seconds"] for r in rs if phase in r]
            s[f"{phase}_s"] = statistics.median(xs) if xs else None
        for who in ("A", "B", "server"):
            peaks = [
                max(r["peak_rss"].get(ph, {}).get(who, 0) for ph in MEASURED)
                for r in rs
                if "peak_rss" in r
            ]
            s[f"peak_{who}_mib"] = statistics.median(peaks) / 2**20 if any(peaks) else None
        out[tool] = s
    return out


FIGURES = [
    ("latency_median_s", "latency A→B, median (s)"),
    ("latency_p95_s", "latency A→B, p95 (s)"),
    ("small_s", "new small files A→B (s)"),
    ("big_s", "one big file A→B (s)"),
    ("peak_A_mib", "peak RSS, side A (MiB)"),
    ("peak_B_mib", "peak RSS, side B (MiB)"),
]
EXTRA = [("latency_loaded_median_s", "latency A→B with the small files present, median (s)")]


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    a, s = summary.get("anysync", {}), summary.get("syncthing", {})
    out: dict[str, float | None] = {}
    for key, _ in FIGURES + EXTRA:
        out[key] = a[key] / s[key] if a.get(key) and s.get(key) else None
    return out


def _f(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"


def markdown(doc: dict[str, Any]) -> str:
    m, mode, summ, rat = doc["machine"], doc["mode"], doc["summary"], doc["ratios"]
    lines = [
        f"# Sync benchmark: AnySync against Syncthing ({mode['name']}, {doc['date']})",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_gib']:.1f} GiB RAM, {m['os']}, "
        f"Python {m['python']}; load average at start {doc['loadavg_start']}.",
        f"Versions: AnySync {doc['versions']['anysync']} ({doc['anysync_code']}); "
        f"{doc['versions']['syncthing']}.",
        f"Data: {mode['latency_samples']} latency samples per round (pause "
        f"{mode['pause_s']:.0f} s), {mode['small_files']:,} small files (1–8 KiB, half "
        f"random, half text), one {mode['big_bytes'] / 1e6:,.0f} MB random file; then "
        f"{mode.get('loaded_samples', 0)} more latency samples with the small files present. "
        f"Rounds: {doc['rounds_done']} (order: {', '.join(doc['order'])}). Syncthing: "
        f"fsWatcherDelayS={ST_WATCH_DELAY_S}, rescanIntervalS={ST_RESCAN_S}, no discovery, "
        "relays or NAT. AnySync: real KDF, one local server.",
        "",
        "| figure | anysync | syncthing | anysync/syncthing | target met (≤ 1) |",
        "|---|---|---|---|---|",
    ]
    for key, label in FIGURES:
        a = summ.get("anysync", {}).get(key)
        s = summ.get("syncthing", {}).get(key)
        r = rat.get(key)
        met = "—" if r is None else ("yes" if r <= 1 else "**no**")
        lines.append(f"| {label} | {_f(a)} | {_f(s)} | {_f(r)} | {met} |")
    for key, label in EXTRA:
        a = summ.get("anysync", {}).get(key)
        s = summ.get("syncthing", {}).get(key)
        lines.append(f"| {label} (no target) | {_f(a)} | {_f(s)} | {_f(rat.get(key))} | — |")
    server = summ.get("anysync", {}).get("peak_server_mib")
    lines += [
        "",
        f"AnySync's server (not counted in either side): peak {_f(server)} MiB. Peak RSS is "
        "the maximum over the measured phases (latency, small files, big file) of the "
        "process tree of the watching client (AnySync) or instance (Syncthing).",
        "",
        "Per round (s; peak MiB per phase: A / B [/ server]):",
        "",
        "| round | tool | warm-up | latency samples | small | latency, loaded | big | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rounds"]:
        lat = " ".join(f"{x:.2f}" for x in r.get("latency", []))
        loaded = " ".join(f"{x:.2f}" for x in r.get("latency_loaded", []))
        small = _f(r["small"]["seconds"]) if "small" in r else "—"
        big = _f(r["big"]["seconds"]) if "big" in r else "—"
        errs = "; ".join(r["errors"]) or "none"
        lines.append(
            f"| {r['round']} | {r['tool']} | {_f(r.get('warmup_s'))} | {lat} | {small} | "
            f"{loaded} | {big} | {errs} |"
        )
    lines += ["", "| round | tool | " + " | ".join(MEASURED) + " |", "|---|---|---|---|---|---|"]
    for r in doc["rounds"]:
        cells = []
        for ph in MEASURED:
            p = r.get("peak_rss", {}).get(ph, {})
            cells.append(" / ".join(f"{v / 2**20:.0f}" for v in p.values()) or "—")
        lines.append(f"| {r['round']} | {r['tool']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small data, 5 latency samples")
    p.add_argument("--rounds", type=int, default=1, help="rounds; tools alternate order")
    p.add_argument("--tools", default="anysync,syncthing")
    p.add_argument(
        "--anysync-code",
        choices=["installed", "head"],
        default="installed",
        help="head: run a snapshot of git HEAD's src/ (others may edit the work tree)",
    )
    p.add_argument("--work-dir", type=Path, default=BENCH / "work" / "sync")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--name", help="result file stem (default sync-quick-latest / sync-full-DATE)")
    p.add_argument("--keep-work", action="store_true", help="keep the folders afterwards")
    p.add_argument("--rerender", type=Path, help="rewrite the Markdown next to a JSON result")
    return p.parse_args(argv)


def _ensure_syncthing() -> None:
    if shutil.which("syncthing"):
        return
    log("installing syncthing (apt-get)")
    subprocess.run(["apt-get", "install", "-y", "syncthing"], check=True, timeout=600)


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        saved = json.loads(args.rerender.read_text())
        args.rerender.with_suffix(".md").write_text(markdown(saved))
        return 0
    mode = QUICK if args.quick else FULL
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "syncthing" in tools:
        _ensure_syncthing()
    today = datetime.date.today().isoformat()
    stem = args.name or ("sync-quick-latest" if args.quick else f"sync-full-{today}")
    work = args.work_dir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    code, commit = (None, "")
    if args.anysync_code == "head":
        src, commit = head_snapshot(work)
        code = src
    code_note = f"git HEAD {commit[:12]} snapshot" if code else "installed (editable) code"
    doc: dict[str, Any] = {
        "kind": "sync",
        "date": today,
        "mode": vars(mode),
        "machine": machine(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "anysync_code": code_note,
        "versions": {
            "anysync": AnySyncSide(work / "probe", code).version(),
            "syncthing": SyncthingSide(work / "probe").version() if "syncthing" in tools else "",
        },
        "settings": {
            "syncthing_fsWatcherDelayS": ST_WATCH_DELAY_S,
            "syncthing_rescanIntervalS": ST_RESCAN_S,
            "latency_poll_s": LATENCY_POLL_S,
            "bulk_poll_s": BULK_POLL_S,
            "rss_sample_s": SAMPLE_S,
        },
        "rounds": [],
        "order": [],
    }
    shutil.rmtree(work / "probe", ignore_errors=True)
    started = time.monotonic()
    with _terminate_as_interrupt():
        try:
            for rnd in range(1, args.rounds + 1):
                order = tools if rnd % 2 else list(reversed(tools))
                doc["order"].append("→".join(order))
                for i, tool in enumerate(order):
                    log(f"round {rnd}: {tool}")
                    tw = work / f"r{rnd}-{tool}"
                    side: Side = AnySyncSide(tw, code) if tool == "anysync" else SyncthingSide(tw)
                    res = run_side(side, mode, seed=1000 * rnd + i)
                    res["round"] = rnd
                    doc["rounds"].append(res)
                    if not args.keep_work:
                        shutil.rmtree(tw, ignore_errors=True)
        except KeyboardInterrupt:
            log("interrupted; writing what was measured")
            doc["interrupted"] = True
    doc["rounds_done"] = len({r["round"] for r in doc["rounds"]})
    doc["elapsed_s"] = time.monotonic() - started
    doc["summary"] = summarize(doc["rounds"], tools)
    doc["ratios"] = ratios(doc["summary"])
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.results_dir / f"{stem}.md").write_text(markdown(doc))
    log(f"wrote {args.results_dir / stem}.{{md,json}}")
    print(markdown(doc))
    ok = not doc.get("interrupted") and all(
        not r["errors"] and all(ph in r for ph in MEASURED) for r in doc["rounds"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
