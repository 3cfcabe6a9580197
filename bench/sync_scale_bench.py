"""Sync at scale: what one pass costs in a folder of many small files (issue #15).

    python bench/sync_scale_bench.py                  # 100,000 files
    python bench/sync_scale_bench.py --files 1000000  # D4

One real `anysync-server` and two devices A and B on 127.0.0.1 (KDF weakened). The
folder is made on A: ~100 files per directory, two levels of directories, each file a
few hundred seeded random bytes. After the initial sync of A then B it measures, for
each `anysync sync run` (one process per pass, so its rusage is the pass's):

- A's pass with no change, A's pass after one changed file, B's pass that fetches it:
  CPU time (user + sys), wall time, peak RSS (ru_maxrss of the process);
- with `sync run --watch` on both devices: the latency from a write on A (an atomic
  rename) to the new content on B (polled every 10 ms).

CPU time is the figure to compare on a loaded machine. `--profile` runs the no-change
and one-change passes of A under py-spy (flame graph SVGs in the work directory).
Results go to stdout as JSON; progress to stderr. The watch figures show passes that
read only the changed paths once `sync run --watch` hands the watcher's paths to each
pass (Watcher.take_changes → engine.run_pass `changed`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import CLIENT, Client, Server, base_env

PER_DIR = 100
STAGE = Path("/tmp")  # set to the work directory (the folders' file system) by main()


def log(msg: str) -> None:
    print(f"[sync-scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_folder(root: Path, files: int, seed: int) -> None:
    """`files` files of 200-700 seeded bytes, PER_DIR to a directory, dirs two levels deep."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        leaf, n = divmod(i, PER_DIR)
        top, sub = divmod(leaf, PER_DIR)
        d = root / f"t{top:04d}" / f"s{sub:03d}"
        if n == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n:03d}.txt").write_bytes(rng.randbytes(rng.randint(200, 700)))


def env_of(client: Client) -> dict[str, str]:
    env = base_env() | {"ANYSYNC_HOME": str(client.home)}
    env["ANYSYNC_TESTONLY_FAULT"] = "crypto.scrypt"  # no password: device.keys only
    return env


def run_pass(client: Client, profile: Path | None = None) -> dict[str, Any]:
    """One `sync run` process: its CPU time (user + sys), wall time and peak RSS (wait4)."""
    argv = [CLIENT, "sync", "run"]
    if profile is not None:
        spy = str(Path(sys.executable).parent / "py-spy")
        argv = [spy, "record", "-r", "100", "-o", str(profile), "--", *argv]
    out = client.home.parent / f"{client.home.name}-pass.log"
    start = time.monotonic()
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            argv, env=env_of(client), stdout=f, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    text = out.read_text(errors="replace").strip()
    if proc.returncode != 0:
        raise SystemExit(f"anysync sync run exited {proc.returncode}: {text[-2000:]}")
    return {
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "wall_s": round(wall, 3),
        "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
        "out": text[-200:],
    }


def hwm(pid: int) -> float:
    """The peak RSS of a running process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def write_atomic(path: Path, data: bytes) -> None:
    """Write as an editor saves: a file beside the folder (never in it), renamed in."""
    tmp = STAGE / f".stage-{os.getpid()}"
    tmp.write_bytes(data)
    os.rename(tmp, path)


def watch_latency(
    a: Client, b: Client, fa: Path, fb: Path, rel: str, samples: int
) -> dict[str, Any]:
    procs = []
    for c in (a, b):
        with open(c.home.parent / f"{c.home.name}-watch.log", "ab") as logf:
            argv = [CLIENT, "sync", "run", "--watch"]
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env_of(c),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
    try:
        # Let both first passes (full scans) finish: wait until A's pass has pushed a probe.
        probe = fa / "probe.txt"
        probe.write_bytes(b"probe")
        deadline = time.monotonic() + 3600
        while not (fb / "probe.txt").exists():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("watch mode did not start")
            time.sleep(0.05)
        time.sleep(2)
        lat = []
        for i in range(samples):
            data = f"watch sample {i} {time.time_ns()}\n".encode() * 8
            t0 = time.monotonic()
            write_atomic(fa / rel, data)
            while (fb / rel).read_bytes() != data if (fb / rel).exists() else True:
                if time.monotonic() - t0 > 120:
                    raise SystemExit("a change did not arrive within 120 s")
                time.sleep(0.01)
            lat.append(round(time.monotonic() - t0, 3))
            log(f"watch latency sample {i}: {lat[-1]} s")
            time.sleep(1.5)
        return {"latency_s": lat, "rss_mib_a": hwm(procs[0].pid), "rss_mib_b": hwm(procs[1].pid)}
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--work", type=Path, default=None, help="kept between runs if given")
    ap.add_argument("--repeat", type=int, default=3, help="measured passes of each kind")
    ap.add_argument("--watch-samples", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="py-spy flame graphs of A's passes")
    args = ap.parse_args()
    work = args.work or Path(f"/tmp/sync-scale-{args.files}")
    fresh = not (work / "ready").exists()
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    global STAGE
    STAGE = work
    if fresh:
        server = Server(work / "server-home")
        (work / "port").write_text(str(server.port))
        server.admin("init")
    else:  # the clients know the server by its address
        server = Server(work / "server-home", port=int((work / "port").read_text()))
    server.start()
    a, b = Client(work / "device-a"), Client(work / "device-b")
    fa, fb = work / "folder-a", work / "folder-b"
    results: dict[str, Any] = {"files": args.files}
    try:
        if fresh:
            a.signup(server, "scale@example.org")
            b.login(server, "scale@example.org")
            log(f"making {args.files} files")
            make_folder(fa, args.files, args.seed)
            a.run("sync", "add", str(fa), "--name", "Scale")
            b.run("sync", "add", str(fb), "--name", "Scale")
            log("initial sync of A")
            results["initial_a"] = run_pass(a)
            log(f"initial sync of B {results['initial_a']}")
            results["initial_b"] = run_pass(b)
            log(f"initial B {results['initial_b']}")
            (work / "ready").write_text("1")
        rel = "t0000/s000/f000.txt"
        rng = random.Random(args.seed + 1)
        for kind in ("nochange_a", "change_a", "fetch_b", "nochange_b"):
            results[kind] = []
        for i in range(args.repeat):
            spy = args.profile and i == 0
            results["nochange_a"].append(run_pass(a, work / "nochange_a.svg" if spy else None))
            write_atomic(fa / rel, rng.randbytes(300))
            results["change_a"].append(run_pass(a, work / "change_a.svg" if spy else None))
            results["fetch_b"].append(run_pass(b, work / "fetch_b.svg" if spy else None))
            results["nochange_b"].append(run_pass(b))
            log(f"round {i}: " + json.dumps({k: results[k][-1] for k in
                ("nochange_a", "change_a", "fetch_b", "nochange_b")}))  # fmt: skip
        if args.watch_samples:
            results["watch"] = watch_latency(a, b, fa, fb, rel, args.watch_samples)
    finally:
        server.stop()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
