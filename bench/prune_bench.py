"""Prune benchmark (#13): forget half the snapshots, then prune; AnySync, restic, borg.

    python bench/prune_bench.py --full               # D1 + D2 (~3.3 GB), 1 round
    python bench/prune_bench.py --quick              # the quick data (~145 MB)
    python bench/prune_bench.py --rerender bench/results/prune-DATE.json

Per tool, in one run on the same data: four snapshots (D1, D2, then D1 and D2 after
half of their content was replaced), forget the first two, prune (`anysync prune`,
`restic prune`, `borg compact`), then `check --read-data` (`restic check --read-data`,
`borg check --verify-data`). Measured per step: wall and CPU time, peak RSS (AnySync:
client and server), repository bytes before and after, bytes freed. The kept snapshots
are restored and compared with the source afterwards (outside the timed steps).
See bench/README.md, "Prune and check".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import prune_report
from bench.datasets import EXT, FULL, QUICK, SEED, Corpus, DataSets, Scale
from bench.main import Bench, log, machine, make_tools
from bench.measure import CommandFailed, Runner
from bench.peers import ensure_peers
from bench.server_load import export_code
from bench.tools import AnySync, Borg, Restic, Tool
from bench.verify import VerifyError, compare, manifest

BENCH = Path(__file__).resolve().parent
DEFAULT_TOOLS = "anysync,restic,borg14"
MiB = 1024 * 1024

# The change between the first and the second pair of snapshots. After forgetting the
# first pair, what only it referenced is garbage: the old content of REPLACED_SHARE of
# D1's files (DELETED_SHARE of them deleted, the rest rewritten with new bytes of the
# same kind and size) and the old content of two of D2's four files.
REPLACED_SHARE = 0.5
DELETED_SHARE = 0.2
D2_REPLACED = ("photos.tar", "dump.sql")  # one incompressible, one text
CHANGE_SEED = SEED + 13

# Deletions must happen at once, and packs written seconds ago must be collectable:
# the server's defaults (24 h each) would make the prune a no-op here.
SERVER_GC_FLAGS = ["--gc-grace", "0s", "--gc-min-pack-age", "0s"]
# Equal thresholds where the tools allow: unused bytes a prune may leave behind.
MAX_UNUSED = "5%"  # AnySync and restic: of the repository
BORG_THRESHOLD = "5"  # borg compact: per segment, percent (its default is 10)

STEP_ORDER = [
    "backup_1_d1",
    "backup_2_d2",
    "backup_3_d1_changed",
    "backup_4_d2_changed",
    "forget",
    "prune",
    "check_read_data",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small data (default)")
    mode.add_argument("--full", action="store_true", help="full data (~3.3 GB)")
    p.add_argument("--rounds", type=int, default=1, help="rounds (default 1)")
    p.add_argument("--tools", default=DEFAULT_TOOLS, help=f"default {DEFAULT_TOOLS}")
    p.add_argument(
        "--anysync-code",
        default="worktree",
        help="`worktree` (a copy of src/ taken at the start; default), `installed`, "
        "a git revision, or a directory holding src/anysync",
    )
    p.add_argument("--work-dir", type=Path, default=BENCH / "work")
    p.add_argument("--peers-dir", type=Path, default=BENCH / "work" / "peers")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument(
        "--name",
        help="result file stem (default prune-DATE; quick: quick-prune-latest, ignored by git)",
    )
    p.add_argument("--skip-verify", action="store_true", help="do not restore the kept snapshots")
    p.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite JSON's .md")
    return p.parse_args(argv)


# ---------------------------------------------------------------- the data of a round


class Source:
    """A copy of D1 and D2 that the round backs up and then changes; the data stays clean."""

    def __init__(self, data: DataSets, root: Path) -> None:
        self.data = data
        self.root = root
        self.d1 = root / "D1"
        self.d2 = root / "D2"

    def copy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        for src, dst in ((self.data.d1, self.d1), (self.data.d2, self.d2)):
            subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], check=True)

    def change(self, scale: Scale) -> dict[str, int]:
        """Replace about half of the content (see REPLACED_SHARE); returns what changed."""
        plan = change_plan(self.data.info.d1_regular, CHANGE_SEED)
        corpus = Corpus(scale)
        rnd = random.Random(CHANGE_SEED)
        rewritten_bytes = 0
        for rel in plan.rewrite:
            path = self.d1 / rel
            size = path.stat().st_size
            path.write_bytes(corpus.content(rnd, kind_of(rel), size))
            rewritten_bytes += size
        for rel in plan.delete:
            (self.d1 / rel).unlink()
        d2_bytes = 0
        for name in D2_REPLACED:
            kind, mib = scale.d2_files[name]
            with open(self.d2 / name, "wb") as f:
                for _ in range(mib // 8):
                    f.write(corpus.content(rnd, kind, 8 * MiB))
                f.write(corpus.content(rnd, kind, (mib % 8) * MiB))
            d2_bytes += mib * MiB
        return {
            "d1_files_rewritten": len(plan.rewrite),
            "d1_bytes_rewritten": rewritten_bytes,
            "d1_files_deleted": len(plan.delete),
            "d2_files_replaced": len(D2_REPLACED),
            "d2_bytes_replaced": d2_bytes,
        }

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class ChangePlan:
    rewrite: list[str]
    delete: list[str]


def change_plan(files: list[str], seed: int) -> ChangePlan:
    """Which of D1's files get new content and which go away (deterministic)."""
    rnd = random.Random(seed)
    chosen = rnd.sample(files, round(len(files) * REPLACED_SHARE))
    cut = round(len(chosen) * DELETED_SHARE)
    return ChangePlan(rewrite=sorted(chosen[cut:]), delete=sorted(chosen[:cut]))


def kind_of(rel: str) -> str:
    """The content kind datasets.py gave a file, told by its extension."""
    ext = rel.rsplit(".", 1)[-1]
    return next((kind for kind, exts in EXT.items() if ext in exts), "text")


# ---------------------------------------------------------------- the tools' commands


@dataclass(frozen=True)
class Maintenance:
    """How one tool forgets snapshots, prunes and reads back everything."""

    env: dict[str, str]
    forget: Callable[[list[str]], list[str]]
    prune: list[str]
    check: list[str]
    prints_json: bool  # AnySync's commands print one JSON document (kept in the results)


def maintenance(tool: Tool) -> Maintenance:
    if isinstance(tool, AnySync):
        exe = tool.client_exe
        return Maintenance(
            tool.client_env,
            lambda snaps: [exe, "forget", "--json", *snaps],
            [exe, "prune", "--max-unused", MAX_UNUSED, "--json"],
            [exe, "check", "--read-data", "--json"],
            prints_json=True,
        )
    if isinstance(tool, Restic):
        exe = tool.exe
        return Maintenance(
            tool.env,
            lambda snaps: [exe, "forget", *snaps],
            [exe, "prune", "--max-unused", MAX_UNUSED],
            [exe, "check", "--read-data"],
            prints_json=False,
        )
    if isinstance(tool, Borg):
        exe = tool.exe
        return Maintenance(
            tool.env,
            lambda snaps: [exe, "delete", f"::{snaps[0]}", *snaps[1:]],
            [exe, "compact", "--threshold", BORG_THRESHOLD],
            [exe, "check", "--verify-data"],
            prints_json=False,
        )
    raise SystemExit(f"no prune commands for {tool.name}")


def snapshot_id(tool: Tool, reported: dict[str, object]) -> str:
    """The ID (borg: archive name) a backup step reported."""
    key = {"anysync": "snapshot", "restic": "snapshot_id"}.get(tool.name, "archive")
    return str(reported[key])


def run_json(tool: Tool, argv: list[str], env: dict[str, str], parse: bool) -> object:
    out = tool.runner.run(argv, env, label=f"{tool.name}-{argv[1]}")
    return json.loads(out) if parse else {"stdout_tail": out[-2000:]}


def check_read_data(tool: Tool) -> object:
    """A check that finds damage is a result to report, not a reason to stop: the run
    goes on to restore the kept snapshots, and exits 1 at the end (see `damage`)."""
    m = maintenance(tool)
    try:
        return run_json(tool, m.check, m.env, m.prints_json)
    except CommandFailed as exc:
        first = str(exc).splitlines()[0]
        exited = re.search(r" exited (-?\d+) \((.+)\)", first)
        if not exited:
            return {"failed": first}
        out = Path(exited[2] + ".out").read_text(errors="replace")
        found = damage_summary(out) if m.prints_json else out[-2000:]
        return {"failed": f"exit {exited[1]}", "found": found}


def damage_summary(out: str) -> object:
    """AnySync's check --json, with each damaged snapshot's file list cut to a count."""
    try:
        doc = json.loads(out)
    except ValueError:
        return out[-2000:]
    damaged = [{**d, "files": len(d.get("files", []))} for d in doc.get("damaged", [])]
    return doc | {"damaged": damaged}


def damage(results: list[dict[str, Any]]) -> list[str]:
    """Notes on the checks that failed (the JSON keeps what they found)."""
    notes = []
    for r in results:
        if r["step"] == "check_read_data" and "failed" in r["reported"]:
            found = r["reported"].get("found")
            what = (
                "; ".join(
                    f"{d['label']}: {d['files']} paths"
                    + (" (a forgotten snapshot)" if d["snapshot"] in r["forgotten"] else "")
                    for d in found["damaged"]
                )
                if isinstance(found, dict) and found.get("damaged")
                else "see `found` in the JSON"
            )
            notes.append(
                f"round {r['round']}: {r['tool']} check --read-data failed "
                f"({r['reported']['failed']}): damage reported in {what}"
            )
    return notes


def settled_bytes(tool: Tool, cap_s: float = 60.0) -> tuple[int, float]:
    """Repository bytes once they stop changing (a server may delete packs after it
    answered), and how long that took; sampled every 0.25 s, at most cap_s."""
    t0 = time.monotonic()
    last = tool.repo_bytes()
    stable = 0
    while stable < 2 and time.monotonic() - t0 < cap_s:
        time.sleep(0.25)
        now = tool.repo_bytes()
        stable = stable + 1 if now == last else 0
        last = now
    return last, round(time.monotonic() - t0, 2)


def gc_now_server(real: str, work: Path) -> str:
    """A stand-in for anysync-server that adds SERVER_GC_FLAGS to `run`.

    tools.AnySync starts `SERVER --home H run --listen A`; the wrapper execs the real
    server (same PID, so the measurement watches the server itself).
    """
    flags = " ".join(SERVER_GC_FLAGS)
    script = work / "anysync-server-gc-now"
    script.write_text(
        f'#!/bin/sh\nif [ "$3" = run ]; then exec "{real}" "$@" {flags}; fi\nexec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


def check_server_flags(tool: AnySync) -> None:
    help_text = subprocess.run(
        [tool.server_exe, "run", "--help"], capture_output=True, text=True, env=tool.env
    ).stdout
    missing = [f for f in SERVER_GC_FLAGS[::2] if f not in help_text]
    if missing:
        raise SystemExit(f"anysync-server run has no {', '.join(missing)}: prune would not delete")


# ---------------------------------------------------------------- one round


class PruneRound:
    def __init__(self, bench: Bench, source: Source, scale: Scale, verify: bool) -> None:
        self.bench = bench
        self.source = source
        self.scale = scale
        self.verify = verify
        self.changed: dict[str, int] = {}

    def run(self, rnd: int, tools: list[Tool], root: Path) -> None:
        n = len(tools)
        order = tools[(rnd - 1) % n :] + tools[: (rnd - 1) % n]
        src = self.source
        snaps: dict[str, list[str]] = {t.name: [] for t in tools}

        def backup(path: Path) -> Callable[[Tool], dict[str, object]]:
            def fn(t: Tool) -> dict[str, object]:
                reported = t.backup(path)
                snaps[t.name].append(snapshot_id(t, reported))
                return reported

            return fn

        step = self.bench.step
        try:
            src.copy()
            for tool in order:
                tool.init_repo(root / tool.name)
            step(rnd, order, "backup_1_d1", backup(src.d1))
            step(rnd, order, "backup_2_d2", backup(src.d2))
            t0 = time.monotonic()
            self.changed = src.change(self.scale)
            log(f"round {rnd}: changed the source in {time.monotonic() - t0:.1f} s: {self.changed}")
            step(rnd, order, "backup_3_d1_changed", backup(src.d1))
            step(rnd, order, "backup_4_d2_changed", backup(src.d2))
            step(
                rnd,
                order,
                "forget",
                lambda t: run_json(
                    t, (m := maintenance(t)).forget(snaps[t.name][:2]), m.env, m.prints_json
                ),
            )
            step(
                rnd,
                order,
                "prune",
                lambda t: run_json(t, (m := maintenance(t)).prune, m.env, m.prints_json),
            )
            self._settle(rnd)
            step(rnd, order, "check_read_data", check_read_data)
            for rec in self._records(rnd, "check_read_data"):
                rec["forgotten"] = snaps[rec["tool"]][:2]
            if self.verify:
                self._verify(rnd, order, root / "restore")
        finally:
            for tool in order:
                tool.close()
            src.remove()
            shutil.rmtree(root, ignore_errors=True)

    def _settle(self, rnd: int) -> None:
        """Record each tool's repository size once deletions have landed."""
        for rec in self._records(rnd, "prune"):
            tool = next(t for t in self.bench.tools if t.name == rec["tool"])
            rec["repo_bytes_settled"], rec["settle_s"] = settled_bytes(tool)

    def _records(self, rnd: int, step: str) -> list[dict[str, Any]]:
        return [r for r in self.bench.results if (r["round"], r["step"]) == (rnd, step)]

    def _verify(self, rnd: int, order: list[Tool], targets: Path) -> None:
        """Restore the kept snapshots (the latest of D1 and D2); compare with the source."""
        expected = {d: manifest(d) for d in (self.source.d1, self.source.d2)}
        for tool in order:
            for d, want in expected.items():
                base = tool.restore(d, targets / f"{tool.name}-{d.name}")
                compare(want, base / d.name, f"round {rnd} {tool.name} {d.name} after prune")
            shutil.rmtree(targets, ignore_errors=True)
        log(f"round {rnd}: every kept snapshot restored and verified after prune")


# ---------------------------------------------------------------- the run


def anysync_tool(runner: Runner, spec: str, work: Path) -> tuple[AnySync, str]:
    """The AnySync under test (a stable copy of its code unless `installed`)."""
    if spec == "installed":
        tool = AnySync(runner)
        describe = "installed (editable) code"
    else:
        dest = work / "anysync-code"
        shutil.rmtree(dest, ignore_errors=True)
        code = export_code(spec, dest)
        tool, describe = AnySync(runner, code.src), code.describe
    real = tool.server_exe
    check_server_flags(tool)
    tool.server_exe = gc_now_server(real, work)
    return tool, describe


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        doc = json.loads(args.rerender.read_text())
        doc["summary"] = prune_report.summarize(doc["results"], doc["tools"])
        args.rerender.write_text(json.dumps(doc, indent=1) + "\n")
        args.rerender.with_suffix(".md").write_text(prune_report.markdown(doc))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    try:
        return run(args)
    except (CommandFailed, VerifyError, RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"FAILED: {exc}")
        return 1


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    scale = FULL if args.full else QUICK
    work = args.work_dir.resolve() / "prune"
    work.mkdir(parents=True, exist_ok=True)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    peers = ensure_peers(args.peers_dir, log, want_borg14="borg14" in names)
    notes = list(peers.notes)
    runner = Runner(work / "logs", timeout_s=3600 if args.full else 600)
    shutil.rmtree(runner.log_dir, ignore_errors=True)
    anysync, code = (
        anysync_tool(runner, args.anysync_code, work)
        if "anysync" in names
        else (AnySync(runner), "")
    )
    tools = make_tools(names, runner, peers, notes, anysync)
    data = DataSets(args.work_dir.resolve() / f"data-{scale.name}", scale)
    t0 = time.monotonic()
    made = data.ensure()
    log(f"data {'generated' if made else 'reused'} in {time.monotonic() - t0:.1f} s")
    bench = Bench(args, runner, tools, data)
    prune_round = PruneRound(bench, Source(data, work / "src"), scale, not args.skip_verify)
    for rnd in range(1, args.rounds + 1):
        prune_round.run(rnd, tools, work / "rounds" / f"r{rnd}")
    failed_checks = damage(bench.results)
    notes += failed_checks
    tool_names = [t.name for t in tools]
    versions = {t.name: t.version() for t in tools}
    if "anysync" in versions:
        versions["anysync"] = f"{versions['anysync'].split(' (')[0]} ({code})"
    info = dataclasses.asdict(data.info)
    del info["d1_regular"]
    doc: dict[str, Any] = {
        "mode": scale.name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds,
        "tools": tool_names,
        "machine": machine(),
        "versions": versions,
        "settings": {
            "max_unused": MAX_UNUSED,
            "borg_compact_threshold": BORG_THRESHOLD,
            "anysync_server": SERVER_GC_FLAGS,
        },
        "data": info | {"change": prune_round.changed},
        "summary": prune_report.summarize(bench.results, tool_names),
        "results": bench.results,
        "notes": notes,
        "total_s": round(time.monotonic() - started, 1),
    }
    stem = args.name or (
        f"prune-{datetime.date.today().isoformat()}" if args.full else "quick-prune-latest"
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = prune_report.markdown(doc)
    (args.results_dir / f"{stem}.md").write_text(md)
    print(md)
    log(f"wrote {args.results_dir / stem}.{{md,json}} in {doc['total_s']} s")
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
