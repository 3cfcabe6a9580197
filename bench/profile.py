"""Profile AnySync's client and server with py-spy on the benchmark's data.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py [--data bench/work/data-full] [--out bench/work/profile]

Runs, against a fresh server: first backup of D1, no-change backup of D1, first backup of
D2, full restore of D2. The client runs under `py-spy record`; another py-spy attaches to
the server for the same command. Prints the top functions (inclusive and self samples)
of each and leaves the raw collapsed stacks (flamegraph input) in --out.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import Runner
from bench.tools import BIN, AnySync

PYSPY = str(BIN / "py-spy")


def _short(frame: str) -> str:
    """ "func (/long/path/file.py:12)" -> "func (file.py)"."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def summarize(raw: Path, top: int = 18) -> str:
    """Top functions by inclusive and by self samples from py-spy's raw (collapsed) output."""
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        total += n
        for f in set(frames):
            incl[f] += n
        if frames:
            self_[frames[-1]] += n
    lines = [f"{raw.name}: {total} samples"]
    lines += ["  inclusive:"] + [f"    {c / total:6.1%}  {f}" for f, c in incl.most_common(top)]
    lines += ["  self:"] + [f"    {c / total:6.1%}  {f}" for f, c in self_.most_common(top)]
    return "\n".join(lines)


def profiled(tool: AnySync, name: str, args: list[str], out: Path) -> None:
    assert tool.proc is not None
    server_raw, client_raw = out / f"{name}-server.txt", out / f"{name}-client.txt"
    spy = [PYSPY, "record", "--rate", "200", "--format", "raw", "--threads"]
    server = subprocess.Popen(
        [*spy, "--pid", str(tool.proc.pid), "-o", str(server_raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    t0 = time.perf_counter()
    subprocess.run(
        [*spy, "--subprocesses", "-o", str(client_raw), "--", tool.client_exe, *args],
        env=tool.client_env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    server.send_signal(signal.SIGINT)
    server.wait(timeout=60)
    print(f"\n=== {name}: {wall:.1f} s wall (under py-spy)")
    for raw in (client_raw, server_raw):
        if raw.exists():
            print(summarize(raw))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=Path(__file__).parent / "work" / "data-full")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "work" / "profile")
    args = p.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    d1, d2 = (args.data / "D1").resolve(), (args.data / "D2").resolve()
    tool = AnySync(Runner(out / "logs", timeout_s=3600))
    tool.init_repo(out / "anysync")
    try:
        profiled(tool, "backup-d1-first", ["backup", "--json", str(d1)], out)
        profiled(tool, "backup-d1-nochange", ["backup", "--json", str(d1)], out)
        profiled(tool, "backup-d2-first", ["backup", "--json", str(d2)], out)
        target = out / "restore"
        profiled(tool, "restore-d2", ["restore", "latest", "--target", str(target)], out)
    finally:
        tool.close()
        shutil.rmtree(out / "anysync", ignore_errors=True)
        shutil.rmtree(out / "restore", ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.pop("ANYSYNC_TESTONLY_WEAKEN_KDF", None)
    sys.exit(main())
