"""Scale benchmark (#15): AnySync and restic on D4, 100k, 300k and 1M small files.

    python bench/scale_bench.py                          # 100k and 300k files
    python bench/scale_bench.py --files 100k,300k,1M --anysync-code head
    python bench/scale_bench.py --quick                  # 20k files (tests/bench)
    python bench/scale_bench.py --rerender bench/results/scale-DATE.json

For each size N, each tool gets a fresh repository (AnySync: a fresh anysync-server on
127.0.0.1 with a local store and a new account) and backs up D4 twice: the first backup,
then one with no change. Per step: wall time, CPU time (user+sys), peak RSS of the
client and (AnySync) of the server, separately; repository and client-cache bytes. The
report shows how each figure grows with N (the curve) and AnySync/restic ratios against
#15's targets: first backup <= 1.0x restic, no-change backup <= 0.3x, client peak RSS
<= 256 MiB at every N. The data (bench/datasets.py, `make_d4`) are generated once per
N under --work-dir and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import operator
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import D4_QUICK_FILES, make_d4
from bench.main import head_snapshot, log, machine, measured_step
from bench.measure import CommandFailed, Runner
from bench.peers import ensure_peers
from bench.tools import AnySync, Restic, Tool

BENCH = Path(__file__).resolve().parent
MiB = 2**20
STEPS = ("backup_first", "backup_nochange")
TARGETS = {"backup_first": 1.0, "backup_nochange": 0.3}  # AnySync/restic wall time
CLIENT_RSS_TARGET = 256 * MiB


def parse_files(spec: str) -> list[int]:
    """'100k,300k,1M' -> [100000, 300000, 1000000]."""
    mult = {"k": 1_000, "m": 1_000_000}
    out = []
    for part in spec.lower().split(","):
        part = part.strip()
        out.append(int(float(part[:-1]) * mult[part[-1]]) if part[-1] in mult else int(part))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", default="100k,300k", help="sizes of D4 (default 100k,300k)")
    p.add_argument("--quick", action="store_true", help=f"{D4_QUICK_FILES:,} files only")
    p.add_argument("--tools", default="anysync,restic", help="anysync and/or restic")
    p.add_argument(
        "--anysync-code",
        choices=["installed", "head"],
        default="installed",
        help="the installed AnySync, or a snapshot of git HEAD's src/",
    )
    p.add_argument("--workers", type=int, default=2, help="processes writing D4")
    p.add_argument("--work-dir", type=Path, default=BENCH / "work" / "scale")
    p.add_argument("--peers-dir", type=Path, default=BENCH / "work" / "peers")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--name", help="result file stem (default scale-DATE, quick-scale-latest)")
    p.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite JSON's .md")
    return p.parse_args(argv)


def run_size(
    runner: Runner, tools: list[Tool], source: Path, n: int, root: Path
) -> list[dict[str, Any]]:
    """Both backups of `source` by every tool, each in a fresh repository under root."""
    results: list[dict[str, Any]] = []
    for tool in tools:
        repo = root / f"{n}-{tool.name}"
        shutil.rmtree(repo, ignore_errors=True)
        try:
            tool.init_repo(repo)
            backup = operator.methodcaller("backup", source)  # each tool its own
            for step in STEPS:
                rec = {"files": n, **measured_step(runner, tool, step, backup)}
                results.append(rec)
                log(
                    f"{n:>9,} {step:<16} {tool.name:<8} {rec['wall_s']:7.2f} s wall "
                    f"{rec['cpu_s']:7.2f} s cpu, client {rec['client_peak_rss'] / MiB:6.1f} MiB "
                    f"server {rec['server_peak_rss'] / MiB:6.1f} MiB"
                )
        finally:
            tool.close()
            shutil.rmtree(repo, ignore_errors=True)
    return results


def _get(results: list[dict[str, Any]], n: int, tool: str, step: str) -> dict[str, Any] | None:
    return next((r for r in results if (r["files"], r["tool"], r["step"]) == (n, tool, step)), None)


def markdown(doc: dict[str, Any]) -> str:
    """The curve per step (one row per N) and the ratios against #15's targets."""
    res, sizes, tools = doc["results"], doc["sizes"], doc["tools"]
    out = [
        f"# AnySync scale benchmark (D4), {doc['date']}",
        "",
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['nproc']} cores, "
        f"{doc['machine']['ram_gib']:.0f} GiB. Versions: "
        + "; ".join(f"{k}: {v}" for k, v in doc["versions"].items()),
        "",
        "| files | dirs | bytes (MiB) | generated in (s) |",
        "|---|---|---|---|",
    ]
    for d in sorted(doc["data"], key=lambda d: int(d["files"])):
        out.append(
            f"| {d['files']:,} | {d['dirs']:,} | {d['bytes'] / MiB:,.0f} | {d['seconds']:.1f} |"
        )
    for step in STEPS:
        out += ["", f"## {step.replace('_', ' ')}", ""]
        head = ["files"]
        for t in tools:
            head += [f"{t} wall (s)", f"{t} CPU (s)", f"{t} client RSS (MiB)"]
            if t == "anysync":
                head += ["anysync server RSS (MiB)", "anysync server CPU (s)"]
        both = {"anysync", "restic"} <= set(tools)
        if both:
            head += ["wall ratio", "CPU ratio", f"foreign CPU (s), {'/'.join(tools)}"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in sizes:
            row = [f"{n:,}"]
            recs = {t: _get(res, n, t, step) for t in tools}
            for t in tools:
                r = recs[t]
                if r is None:
                    row += ["—"] * (5 if t == "anysync" else 3)
                    continue
                row += [
                    f"{r['wall_s']:.2f}",
                    f"{r['cpu_s']:.2f}",
                    f"{r['client_peak_rss'] / MiB:.0f}",
                ]
                if t == "anysync":
                    row += [f"{r['server_peak_rss'] / MiB:.0f}", f"{r['server_cpu_s']:.2f}"]
            if both:
                a, b = recs["anysync"], recs["restic"]
                if a and b:
                    row += [
                        f"{a['wall_s'] / b['wall_s']:.2f}",
                        f"{a['cpu_s'] / b['cpu_s']:.2f}",
                        "/".join(f"{recs[t]['foreign_cpu_s']:.0f}" for t in tools),  # type: ignore[index]
                    ]
                else:
                    row += ["—"] * 3
            out.append("| " + " | ".join(row) + " |")
    out += [
        "",
        "## Targets (#15)",
        "",
        "| figure | files | value | target | met |",
        "|---|---|---|---|---|",
    ]
    for t in sorted(doc["targets"], key=lambda t: int(t["files"])):
        out.append(
            f"| {t['figure']} | {t['files']:,} | {t['value']} | {t['target']} | "
            f"{'yes' if t['met'] else '**no**'} |"
        )
    if doc.get("growth"):
        out += ["", "## Growth of the client's peak RSS with the number of files", ""]
        out += ["| tool | step | MiB per 100k files (first to last N) |", "|---|---|---|"]
        for g in doc["growth"]:
            out.append(f"| {g['tool']} | {g['step']} | {g['mib_per_100k']:.1f} |")
    notes = [*doc["notes"], f"whole run {doc.get('timing', {}).get('total_s', '?')} s"]
    out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def targets(res: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in sizes:
        for step, limit in TARGETS.items():
            a, b = _get(res, n, "anysync", step), _get(res, n, "restic", step)
            if a and b:
                ratio = a["wall_s"] / b["wall_s"]
                out.append(
                    {
                        "figure": f"{step} wall, AnySync/restic",
                        "files": n,
                        "value": f"{ratio:.2f}",
                        "target": f"<= {limit}",
                        "met": ratio <= limit,
                    }
                )
        peaks = [r["client_peak_rss"] for r in res if (r["files"], r["tool"]) == (n, "anysync")]
        if peaks:
            out.append(
                {
                    "figure": "AnySync client peak RSS (MiB)",
                    "files": n,
                    "value": f"{max(peaks) / MiB:.0f}",
                    "target": f"<= {CLIENT_RSS_TARGET // MiB}",
                    "met": max(peaks) <= CLIENT_RSS_TARGET,
                }
            )
    return out


def growth(res: list[dict[str, Any]], sizes: list[int], tools: list[str]) -> list[dict[str, Any]]:
    """Client peak RSS slope between the smallest and the largest N."""
    if len(sizes) < 2:
        return []
    lo, hi = min(sizes), max(sizes)
    out = []
    for tool in tools:
        for step in STEPS:
            a, b = _get(res, lo, tool, step), _get(res, hi, tool, step)
            if a and b:
                slope = (b["client_peak_rss"] - a["client_peak_rss"]) / MiB / ((hi - lo) / 1e5)
                out.append({"tool": tool, "step": step, "mib_per_100k": slope})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        doc = json.loads(args.rerender.read_text())
        args.rerender.with_suffix(".md").write_text(markdown(doc))
        return 0
    try:
        return run(args)
    except (CommandFailed, RuntimeError) as exc:
        log(f"FAILED: {exc}")
        return 1


def _write(doc: dict[str, Any], results_dir: Path, stem: str) -> None:
    doc["targets"] = targets(doc["results"], doc["sizes"])
    doc["growth"] = growth(doc["results"], doc["sizes"], doc["tools"])
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (results_dir / f"{stem}.md").write_text(markdown(doc))


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    sizes = [D4_QUICK_FILES] if args.quick else parse_files(args.files)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not set(names) <= {"anysync", "restic"}:
        raise SystemExit(f"--tools: only anysync and restic, not {args.tools!r}")
    work = args.work_dir.resolve()
    peers = ensure_peers(args.peers_dir, log, want_borg14=False)
    runner = Runner(work / "logs", timeout_s=7200)
    shutil.rmtree(runner.log_dir, ignore_errors=True)
    code, commit = head_snapshot(work) if args.anysync_code == "head" else (None, "")
    tools: list[Tool] = [
        AnySync(runner, code, commit)
        if name == "anysync"
        else Restic(runner, peers.restic or "restic")
        for name in names
    ]
    tool_names = [t.name for t in tools]
    doc: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": [],
        "tools": tool_names,
        "machine": machine(),
        "versions": {t.name: t.version() for t in tools},
        "data": [],
        "results": [],
        "notes": list(peers.notes),
    }
    stem = args.name or (
        "quick-scale-latest" if args.quick else f"scale-{datetime.date.today().isoformat()}"
    )
    for n in sizes:
        source, info, made = make_d4(work / f"data-{n}", n, args.workers)
        log(
            f"D4 {n:,} files {'generated' if made else 'reused'}: {info.dirs:,} dirs, "
            f"{info.bytes / MiB:,.0f} MiB (generation took {info.seconds:.1f} s)"
        )
        doc["data"].append(dataclasses.asdict(info))
        doc["results"] += run_size(runner, tools, source, n, work / "repos")
        doc["sizes"] = sorted([*doc["sizes"], n])
        # Written after every size: a long run cut short still leaves its curve.
        doc["timing"] = {"total_s": round(time.monotonic() - started)}
        _write(doc, args.results_dir, stem)
    print(markdown(doc))
    log(f"wrote {args.results_dir / stem}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
