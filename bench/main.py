"""The benchmark run: install peers, make data, run rounds of steps, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import limits, report
from bench.datasets import FULL, QUICK, DataSets
from bench.measure import CommandFailed, Runner
from bench.peers import Peers, ensure_peers
from bench.tools import AnySync, Borg, Restic, Tool
from bench.verify import VerifyError, compare, compare_file, manifest

BENCH = Path(__file__).resolve().parent
DEFAULT_TOOLS = "anysync,restic,borg14"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small data, 1 round (default)")
    mode.add_argument("--full", action="store_true", help="full data (~3.3 GB), 3 rounds")
    p.add_argument("--rounds", type=int, help="rounds (default: quick 1, full 3)")
    p.add_argument(
        "--tools",
        default=DEFAULT_TOOLS,
        help=f"any of anysync,restic,borg14,borg12 (default {DEFAULT_TOOLS})",
    )
    p.add_argument("--work-dir", type=Path, default=BENCH / "work")
    p.add_argument(
        "--peers-dir",
        type=Path,
        default=BENCH / "work" / "peers",
        help="where borg 1.4's venv is built (kept between runs)",
    )
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument(
        "--budget-min",
        type=float,
        default=0,
        help="start no further round once the run would exceed this (0: no limit)",
    )
    p.add_argument(
        "--anysync-code",
        choices=["installed", "head"],
        default="installed",
        help="run the installed AnySync, or a snapshot of the git HEAD's src/ "
        "(stable while others edit the work tree)",
    )
    p.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite JSON's .md")
    p.add_argument("--skip-limits", action="store_true", help="do not measure physical limits")
    return p.parse_args(argv)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    os_name = "Linux"
    if Path("/etc/os-release").exists():
        lines = Path("/etc/os-release").read_text().splitlines()
        rel = dict(line.split("=", 1) for line in lines if "=" in line)
        os_name = rel.get("PRETTY_NAME", "Linux").strip('"')
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "ram_gib": kib / 1024 / 1024,
        "os": f"{os_name}, kernel {platform.release()}",
        "python": platform.python_version(),
    }


def _cmd_version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else "?"


def head_snapshot(work: Path) -> tuple[Path, str]:
    """Extract src/ of the git HEAD under work/; returns (its src dir, the commit)."""
    repo = BENCH.parent
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = work / f"anysync-{commit[:12]}"
    if not (dest / "src").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit, "src"], cwd=repo, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src", commit


def make_tools(
    names: list[str], runner: Runner, peers: Peers, notes: list[str], anysync: AnySync
) -> list[Tool]:
    tools: list[Tool] = []
    for name in names:
        if name == "anysync":
            tools.append(anysync)
        elif name == "restic":
            tools.append(Restic(runner, peers.restic or "restic"))
        elif name == "borg12":
            tools.append(Borg(runner, peers.borg12 or "borg", "borg12"))
        elif name == "borg14":
            if peers.borg14:
                tools.append(Borg(runner, peers.borg14, "borg14"))
            else:
                notes.append("borg 1.4 unavailable: compared Debian's borg 1.2 instead")
                tools.append(Borg(runner, peers.borg12 or "borg", "borg12"))
        else:
            raise SystemExit(f"unknown tool {name!r}")
    return tools


def measured_step(
    runner: Runner, tool: Tool, step: str, fn: Callable[[Tool], Any]
) -> dict[str, Any]:
    """Run one step of `tool` under measurement: the record of it that every bench keeps
    (the measurement, the repository's size and growth, the tool's cache, its report)."""
    before = tool.repo_bytes()
    with runner.measure(tool.watched()) as m:
        reported = fn(tool)
    after = tool.repo_bytes()
    return {
        "tool": tool.name,
        "step": step,
        **dataclasses.asdict(m),
        "repo_bytes": after,
        "bytes_added": after - before,
        "cache_bytes": tool.cache_bytes(),
        "reported": reported,
    }


class Bench:
    def __init__(
        self, args: argparse.Namespace, runner: Runner, tools: list[Tool], data: DataSets
    ) -> None:
        self.args = args
        self.runner = runner
        self.tools = tools
        self.data = data
        self.results: list[dict[str, Any]] = []
        self.d3: dict[str, int] = {}
        self.idle: list[dict[str, Any]] = []  # AnySync's server at rest, per round

    def step(self, rnd: int, order: list[Tool], step: str, fn: Callable[[Tool], Any]) -> None:
        for tool in order:
            rec = {"round": rnd, **measured_step(self.runner, tool, step, fn)}
            self.results.append(rec)
            log(
                f"round {rnd} {step:<20} {tool.name:<8} {rec['wall_s']:7.2f} s wall "
                f"{rec['cpu_s']:7.2f} s cpu {rec['peak_rss'] / 2**20:7.1f} MiB peak "
                f"{rec['bytes_added'] / 2**20:9.1f} MiB added"
            )

    def idle_figures(self, rnd: int, anysync: AnySync, fresh_rss: int) -> dict[str, Any]:
        rec = {
            "round": rnd,
            "server_rss_fresh": fresh_rss,
            "server_rss_after": anysync.server_rss(),
            "snapshots_wall_s": anysync.command_start_s(),
        }
        log(
            f"round {rnd} idle server {fresh_rss / 2**20:.0f} MiB fresh, "
            f"{rec['server_rss_after'] / 2**20:.0f} MiB after the round; "
            f"`anysync snapshots` {rec['snapshots_wall_s']:.2f} s"
        )
        return rec

    def round(self, rnd: int) -> None:
        n = len(self.tools)
        order = self.tools[(rnd - 1) % n :] + self.tools[: (rnd - 1) % n]
        root = self.args.work_dir / "rounds" / f"r{rnd}"
        shutil.rmtree(root, ignore_errors=True)
        d1, d2 = self.data.d1, self.data.d2
        d3_applied = False
        try:
            for tool in order:
                tool.init_repo(root / tool.name)
            anysync = next((t for t in order if isinstance(t, AnySync)), None)
            fresh_rss = anysync.server_rss() if anysync else 0
            self.step(rnd, order, "backup_d1_first", lambda t: t.backup(d1))
            self.step(rnd, order, "backup_d2_first", lambda t: t.backup(d2))
            self.step(rnd, order, "backup_d1_nochange", lambda t: t.backup(d1))
            self.d3 = self.data.apply_d3()
            d3_applied = True
            self.step(rnd, order, "backup_d3", lambda t: [t.backup(d1), t.backup(d2)])
            # D1 as its latest snapshot has it (D3 applied); taken before any timed step.
            expected = {"restore_d2_full": manifest(d2), "restore_d1_full": manifest(d1)}
            targets = root / "restore"

            def restore_d2(t: Tool) -> dict[str, Any]:
                base = t.restore(d2, targets / f"{t.name}-d2")
                return {"verified_entries": None, "restored": str(base / d2.name)}

            def restore_d1(t: Tool) -> dict[str, Any]:
                base = t.restore(d1, targets / f"{t.name}-d1-full")
                return {"verified_entries": None, "restored": str(base / d1.name)}

            def restore_file(t: Tool) -> dict[str, Any]:
                base = t.restore(d1, targets / f"{t.name}-d1", self.data.info.one_file)
                return {"restored": str(base / self.data.info.one_file)}

            self.step(rnd, order, "restore_d2_full", restore_d2)
            self.step(rnd, order, "restore_d1_full", restore_d1)
            self.step(rnd, order, "restore_d1_file", restore_file)
            if anysync:
                self.idle.append(self.idle_figures(rnd, anysync, fresh_rss))
            # Verification happens outside the timed steps.
            for rec in self.results:
                if rec["round"] != rnd or not rec["step"].startswith("restore"):
                    continue
                restored = Path(rec["reported"]["restored"])
                what = f"round {rnd} {rec['tool']} {rec['step']}"
                if rec["step"] in expected:
                    rec["reported"]["verified_entries"] = compare(
                        expected[rec["step"]], restored, what
                    )
                else:
                    compare_file(d1.parent / self.data.info.one_file, restored, what)
                rec["verified"] = True
            log(f"round {rnd}: every restore verified")
        finally:
            for tool in order:
                tool.close()
            if d3_applied:
                self.data.revert_d3()
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except (CommandFailed, VerifyError, RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"FAILED: {exc}")
        return 1


def rerender(path: Path) -> int:
    """Rewrite the Markdown report next to a JSON result (after changing report.py)."""
    doc = json.loads(path.read_text())
    doc["summary"] = report.summarize(doc["results"], doc["tools"])
    doc["targets"] = report.targets(doc["summary"], doc["tools"], doc.get("idle", {}))
    path.write_text(json.dumps(doc, indent=1) + "\n")
    path.with_suffix(".md").write_text(report.markdown(doc))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.rerender:
        return rerender(args.rerender)
    full = bool(args.full)
    scale = FULL if full else QUICK
    rounds = args.rounds or (3 if full else 1)
    args.work_dir = args.work_dir.resolve()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    notes: list[str] = []
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    peers = ensure_peers(args.peers_dir, log, want_borg14="borg14" in names)
    notes += peers.notes
    setup_s = time.monotonic() - started
    runner = Runner(args.work_dir / "logs", timeout_s=3600 if full else 600)
    shutil.rmtree(runner.log_dir, ignore_errors=True)
    code, commit = head_snapshot(args.work_dir) if args.anysync_code == "head" else (None, "")
    tools = make_tools(names, runner, peers, notes, AnySync(runner, code, commit))
    data = DataSets(args.work_dir / f"data-{scale.name}", scale)
    t0 = time.monotonic()
    made = data.ensure()
    log(
        f"data {'generated' if made else 'reused'} in {time.monotonic() - t0:.1f} s: "
        f"D1 {data.info.d1_files} files {data.info.d1_bytes / 2**20:.0f} MiB, "
        f"D2 {data.info.d2_bytes / 2**20:.0f} MiB"
    )
    bench = Bench(args, runner, tools, data)
    done = 0
    for rnd in range(1, rounds + 1):
        r0 = time.monotonic()
        bench.round(rnd)
        done = rnd
        per_round = time.monotonic() - r0
        left = args.budget_min * 60 - (time.monotonic() - started)
        if args.budget_min and rnd < rounds and left < per_round * 1.1:
            notes.append(f"stopped after {rnd} of {rounds} rounds: --budget-min {args.budget_min}")
            log(notes[-1])
            break
    rounds = done
    lim: list[dict[str, Any]] = []
    floor: dict[str, Any] = {}
    if not args.skip_limits:
        log("measuring physical limits")
        text = data.d2 / "server.log"
        sample = (256 if full else 32) * 2**20
        lim = limits.cpu_limits(text, data.d2 / "video.mkv", sample, peers.aux_python)
        for ds in ("D1", "D2"):
            f = limits.floor(runner, data.root, ds, args.work_dir / "floor")
            floor[ds] = {
                k: dataclasses.asdict(v) if not isinstance(v, int) else v for k, v in f.items()
            }
        shutil.rmtree(args.work_dir / "floor", ignore_errors=True)
    tool_names = [t.name for t in tools]
    summary = report.summarize(bench.results, tool_names)
    idle = report.summarize_idle(bench.idle)
    info = dataclasses.asdict(data.info)
    del info["d1_regular"]
    doc: dict[str, Any] = {
        "mode": scale.name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": rounds,
        "tools": tool_names,
        "machine": machine(),
        "versions": {t.name: t.version() for t in tools}
        | {
            "zstd": _cmd_version(["zstd", "--version"]),
            "openssl": _cmd_version(["openssl", "version"]),
        },
        "data": info | {"d2_files": {k: v[1] for k, v in scale.d2_files.items()}, "d3": bench.d3},
        "summary": summary,
        "idle": idle,
        "targets": report.targets(summary, tool_names, idle),
        "limits": lim,
        "floor": floor,
        "results": bench.results,
        "notes": notes,
        "timing": {"setup_s": round(setup_s, 1), "total_s": 0.0},
    }
    doc["timing"]["total_s"] = round(time.monotonic() - started, 1)
    doc["notes"].append(
        f"harness time: peer setup {doc['timing']['setup_s']} s, whole run "
        f"{doc['timing']['total_s']} s"
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = "quick-latest" if not full else f"full-{datetime.date.today().isoformat()}"
    (args.results_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = report.markdown(doc)
    (args.results_dir / f"{stem}.md").write_text(md)
    print(md)
    log(f"wrote {args.results_dir / stem}.{{md,json}} in {doc['timing']['total_s']} s")
    return 0
