"""`make bench`: every measurement issue #15 asks for, in one run, and its target table.

    python bench/suite.py                       # everything (about 1.5 hours, quiet machine)
    python bench/suite.py --parts main,index    # some parts only
    python bench/suite.py --table-only          # rebuild the table from today's results

The parts run one after another, each as its own process writing its own results
under bench/results/ (named by today's date), AnySync always from a snapshot of git HEAD:

- main:  `run.py --full`, D1/D2/D3 backups and restores against restic and borg,
         3 rounds, with the server's idle RSS and the command start;
- index: `server_index_bench.py`, FindBlobs of 10,000 IDs at D4 scale, 30 snapshots;
- sync:  `sync_bench.py --rounds 2`, two devices against Syncthing (500 MB file too);
- scale: `scale_bench.py --files 100k,300k,1M`, D4 against restic;
- sync-scale-100k, sync-scale-1M: `sync_scale_bench.py`, the cost of a sync pass and
         the watch latency in a folder of that many files.

Then `bench/results/issue15-DATE.md` lists every target with its measured value: met,
missed by how much, or not measured (a part that did not run or failed). The causes of
what is missed are in bench/README.md. Exit status 0 only when every part ran.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PY = sys.executable
MiB = 2**20


def log(msg: str) -> None:
    print(f"[suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Part:
    name: str
    command: str  # the script and its arguments; {results} and {date} are filled in
    stdout_to: str = ""  # a result file for what the part prints (JSON), if it writes none

    def argv(self, results: Path, date: str) -> list[str]:
        words = [w.format(results=results, date=date) for w in self.command.split()]
        return [PY, str(BENCH / words[0]), *words[1:]]


PARTS = [
    Part("main", "run.py --full --anysync-code head --results-dir {results}"),
    Part("index", "server_index_bench.py --json {results}/index-{date}.json"),
    Part("sync", "sync_bench.py --rounds 2 --anysync-code head --results-dir {results}"),
    Part(
        "scale",
        "scale_bench.py --files 100k,300k,1M --anysync-code head --results-dir {results}",
    ),
    Part("sync-scale-100k", "sync_scale_bench.py --files 100000", "sync-scale-100k-{date}.json"),
    Part(
        "sync-scale-1M",
        "sync_scale_bench.py --files 1000000 --repeat 2 --watch-samples 3",
        "sync-scale-1M-{date}.json",
    ),
]


def run_part(part: Part, results: Path, date: str) -> bool:
    argv = part.argv(results, date)
    log(f"{part.name}: {' '.join(argv[1:])}")
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE if part.stdout_to else None)
    if part.stdout_to and proc.returncode == 0:
        (results / part.stdout_to.format(date=date)).write_bytes(proc.stdout)
    log(f"{part.name}: exit {proc.returncode} after {time.monotonic() - t0:.0f} s")
    return proc.returncode == 0


# ------------------------------------------------------------------ the target table


@dataclass
class Row:
    area: str
    target: str
    measured: str = "not measured"
    met: bool | None = None  # None: not measured
    missed_by: float | None = None  # value / bound, when missed
    reported: bool = False  # a figure the issue asks to see, with no bound

    def verdict(self) -> str:
        if self.reported:
            return "reported"
        if self.met is None:
            return "not measured"
        if self.met:
            return "yes"
        return f"**no** ({self.missed_by:.2f}x the bound)" if self.missed_by else "**no**"


def bounded(area: str, target: str, measured: str, value: float, bound: float) -> Row:
    met = value <= bound
    return Row(area, target, measured, met, None if met else round(value / bound, 2))


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def main_rows(doc: dict[str, Any] | None) -> list[Row]:
    if doc is None:
        return [Row("D1/D2 against restic and borg", "every target of `run.py --full`")]
    return [
        Row("D1/D2", t["target"], t["measured"], t["met"], t.get("missed_by"))
        for t in doc["targets"]
    ]


def index_rows(doc: dict[str, Any] | None) -> list[Row]:
    what = "FindBlobs of 10,000 IDs, D4-sized index, 30 snapshots <= 50 ms"
    if doc is None:
        return [Row("server index", what)]
    measured = (
        f"{doc['median_ms']} ms at {doc['rows']:,} rows; database "
        f"{doc['db_bytes'] / MiB:.0f} MiB ({doc['bytes_per_row']} B per row)"
    )
    return [bounded("server index", what, measured, float(doc["median_ms"]), 50.0)]


def scale_rows(doc: dict[str, Any] | None) -> list[Row]:
    if doc is None:
        return [Row("D4", "first and no-change backup against restic, client RSS <= 256 MiB")]
    rows = []
    for t in doc["targets"]:
        bound = float(t["target"].removeprefix("<=").strip())
        target = f"{t['figure']} at {t['files']:,} files {t['target']}"
        rows.append(bounded("D4", target, t["value"], float(t["value"]), bound))
    growth = "; ".join(
        f"{g['tool']} {g['step']} {g['mib_per_100k']:.0f} MiB" for g in doc.get("growth", [])
    )
    if growth:
        rows.append(Row("D4", "client peak RSS growth per 100k files", growth, reported=True))
    return rows


def sync_rows(doc: dict[str, Any] | None) -> list[Row]:
    what_big = "500 MB file A -> B: time <= Syncthing's"
    what_mem = "peak RSS of each device <= Syncthing's"
    if doc is None or "syncthing" not in doc.get("summary", {}):
        return [Row("Syncthing", what_big), Row("Syncthing", what_mem)]
    mine, theirs, ratio = doc["summary"]["anysync"], doc["summary"]["syncthing"], doc["ratios"]
    mem = max(ratio["peak_A_mib"], ratio["peak_B_mib"])
    return [
        bounded(
            "Syncthing",
            what_big,
            f"{mine['big_s']:.2f} s vs {theirs['big_s']:.2f} s -> {ratio['big_s']:.2f}x",
            ratio["big_s"],
            1.0,
        ),
        bounded(
            "Syncthing",
            what_mem,
            f"A {mine['peak_A_mib']:.0f} / B {mine['peak_B_mib']:.0f} MiB vs "
            f"{theirs['peak_A_mib']:.0f} / {theirs['peak_B_mib']:.0f} MiB -> {mem:.2f}x",
            mem,
            1.0,
        ),
    ]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def sync_scale_rows(docs: dict[str, dict[str, Any] | None]) -> list[Row]:
    rows = []
    cpu: dict[str, float] = {}
    for label, doc in docs.items():
        what = f"one changed file reaches the other device (watch) <= 2 s, {label} files"
        if doc is None or "watch" not in doc:
            rows.append(Row("sync at scale", what))
            continue
        lat = _median(doc["watch"]["latency_s"])
        rss = max(doc["watch"]["rss_mib_a"], doc["watch"]["rss_mib_b"])
        rows.append(
            bounded(
                "sync at scale", what, f"{lat:.2f} s median; watchers' peak {rss:.0f} MiB", lat, 2.0
            )
        )
        passes = {k: _median([p["cpu_s"] for p in doc[k]]) for k in ("change_a", "fetch_b")}
        cpu[label] = passes["change_a"] + passes["fetch_b"]
        rows.append(
            Row(
                "sync at scale",
                f"one-change passes (A sends, B fetches), {label} files",
                f"CPU {passes['change_a']:.2f} s + {passes['fetch_b']:.2f} s",
                reported=True,
            )
        )
    what = "a pass costs O(change): one-change pass CPU at 1M / at 100k <= 2"
    if {"100k", "1M"} <= cpu.keys():
        ratio = cpu["1M"] / cpu["100k"]
        rows.append(
            bounded("sync at scale", what, f"{ratio:.1f}x (O(folder) would be ~10x)", ratio, 2.0)
        )
    else:
        rows.append(Row("sync at scale", what))
    return rows


def table(results: Path, date: str) -> list[Row]:
    return [
        *main_rows(_load(results, f"full-{date}.json")),
        *scale_rows(_load(results, f"scale-{date}.json")),
        *index_rows(_load(results, f"index-{date}.json")),
        *sync_rows(_load(results, f"sync-full-{date}.json")),
        *sync_scale_rows(
            {
                "100k": _load(results, f"sync-scale-100k-{date}.json"),
                "1M": _load(results, f"sync-scale-1M-{date}.json"),
            }
        ),
    ]


def markdown(rows: list[Row], date: str, notes: list[str]) -> str:
    bounded_rows = [r for r in rows if not r.reported]
    met = sum(r.met is True for r in bounded_rows)
    missed = sum(r.met is False for r in bounded_rows)
    unmeasured = sum(r.met is None for r in bounded_rows)
    out = [
        f"# Issue #15 targets, {date}",
        "",
        f"From `bench/suite.py` (`make bench`): {met} met, {missed} missed, "
        f"{unmeasured} not measured. The part results beside this file (`full-`, `scale-`, "
        f"`index-`, `sync-full-`, `sync-scale-*-{date}`) hold every figure; "
        "bench/README.md gives the measured cause of each miss.",
        "",
        "| area | target | measured | met |",
        "|---|---|---|---|",
        *(f"| {r.area} | {r.target} | {r.measured} | {r.verdict()} |" for r in rows),
        "",
    ]
    if notes:
        out += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [part.name for part in PARTS]
    p.add_argument("--parts", default=",".join(names), help=f"any of {','.join(names)}")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument(
        "--date",
        default=datetime.date.today().isoformat(),
        help="the date in the result names (default today)",
    )
    p.add_argument("--table-only", action="store_true", help="only write the target table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(wanted) - {p.name for p in PARTS}
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(sorted(unknown))}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    failed: list[str] = []
    if not args.table_only:
        t0 = time.monotonic()
        for part in PARTS:
            if part.name in wanted and not run_part(part, args.results_dir, args.date):
                failed.append(part.name)
        notes.append(f"parts run: {', '.join(wanted)}; {time.monotonic() - t0:.0f} s in all")
        if failed:
            notes.append(f"parts that failed (their targets: not measured): {', '.join(failed)}")
    rows = table(args.results_dir, args.date)
    out = args.results_dir / f"issue15-{args.date}.md"
    out.write_text(markdown(rows, args.date, notes))
    log(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
