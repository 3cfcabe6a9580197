"""Mutation testing of the modules where a silent bug loses or leaks data (make mutation).

mutmut 3 works on a copy: this script stages src/, the unit tests and the configuration
(scripts/mutation/setup.cfg) in .mutation/ at the top of the repository, runs
`mutmut run` there on the functions in SCOPES only, and prints a score per area. The
last line is `mutation score: K/N killed`. The working tree is never modified.

    python scripts/mutation/run.py            # a clean run (2-5 minutes on 2 cores)
    python scripts/mutation/run.py --list     # also list every surviving mutant
    python scripts/mutation/run.py --keep     # reuse .mutation/ (mutmut's own cache)

Then `cd .mutation && ../.venv/bin/mutmut show NAME` shows one mutant's diff.
Exit status: 0, or 1 if the score is below --min (default 0.9).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STAGE = ROOT / ".mutation"

# Area -> mutmut mutant-name patterns (module.x_function / module.xǁClassǁmethod).
# A whole module where all of it is the area; otherwise only the functions that are.
SCOPES: dict[str, list[str]] = {
    "envelope": ["anysync.client.repo.envelope.*"],
    "tree": ["anysync.client.repo.tree.*"],
    "history/refs": [
        "anysync.client.repo.history.*",
        # the one compare-and-swap loop, the rollback floor and the seen-refs check
        "anysync.client.repo.refs.*",
        "anysync.client.statedb.xǁStateDBǁseen__mutmut_*",
        "anysync.client.statedb.xǁStateDBǁset_seen__mutmut_*",
        "anysync.client.statedb.xǁStateDBǁseen_labels__mutmut_*",
    ],
    "merge": ["anysync.client.sync.merge.*"],
    "restore paths": [
        "anysync.client.restore.x__select__mutmut_*",
        "anysync.client.restore.xǁ_Restorerǁrestore_into__mutmut_*",
        "anysync.client.restore.xǁ_Restorerǁ_restore_entries__mutmut_*",
        "anysync.client.restore.xǁ_Restorerǁ_open_dir__mutmut_*",
        "anysync.client.restore.xǁ_Restorerǁ_apply_dir_meta__mutmut_*",
    ],
    "stat cache": [
        "anysync.client.statedb.x__ids__mutmut_*",
        "anysync.client.statedb.xǁStateDBǁstats_in__mutmut_*",
        "anysync.client.statedb.xǁStateDBǁput_stats__mutmut_*",
        "anysync.client.statedb.xǁStateDBǁforget_stats__mutmut_*",
        "anysync.client.statedb.x__row_mac__mutmut_*",
        "anysync.client.statedb.xǁ_Txǁ*",
        "anysync.client.backup.xǁ_Walkerǁ_file__mutmut_*",
        "anysync.client.backup.xǁ_Walkerǁ_read__mutmut_*",
        "anysync.client.backup.xǁ_Walkerǁcached_in__mutmut_*",
        "anysync.client.backup.x__stat_key__mutmut_*",
        "anysync.client.backup.x__unchanged__mutmut_*",
    ],
    "auth": ["anysync.server.auth.*"],
    "quota": [
        "anysync.server.metadata.x_check_quota__mutmut_*",
        "anysync.server.metadata.xǁMetadataǁadd_pack__mutmut_*",
        "anysync.server.metadata.xǁMetadataǁset_quota__mutmut_*",
        "anysync.server.service.xǁCoreǁquota__mutmut_*",
    ],
}

TEST_FILES = ["__init__.py", "conftest.py", "s3server.py", "ports.py"]


def stage() -> None:
    """A fresh copy of what mutmut needs; mutants/ inside it is mutmut's work area."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", STAGE / "src", ignore=ignore)
    (STAGE / "tests").mkdir()
    for name in TEST_FILES:
        shutil.copy2(ROOT / "tests" / name, STAGE / "tests" / name)
    shutil.copytree(ROOT / "tests" / "unit", STAGE / "tests" / "unit", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", STAGE / "pyproject.toml")
    shutil.copy2(HERE / "setup.cfg", STAGE / "setup.cfg")


def results() -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (STAGE / "mutants").rglob("*.py.meta"):
        out.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])
    return out


# mutmut's exit codes (mutmut/stats.py): 1 and 3 killed, 36/24/152/255 timeout,
# 37 caught by the type checker; 0 survived, 5/33 no test reached it.
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="reuse .mutation/ from the last run")
    ap.add_argument("--list", action="store_true", help="list every mutant not killed")
    ap.add_argument("--min", type=float, default=0.9, help="fail below this score")
    ap.add_argument("--max-children", type=int, default=None)
    args = ap.parse_args()

    started = time.monotonic()
    if not args.keep or not STAGE.exists():
        stage()
    else:  # the tests may have changed since
        shutil.rmtree(STAGE / "tests" / "unit")
        shutil.copytree(ROOT / "tests" / "unit", STAGE / "tests" / "unit")
    patterns = [p for pats in SCOPES.values() for p in pats]
    cmd = [sys.executable, "-m", "mutmut", "run"]
    if args.max_children:
        cmd += ["--max-children", str(args.max_children)]
    proc = subprocess.run([*cmd, *patterns], cwd=STAGE, check=False)
    if proc.returncode != 0:
        print(f"mutmut run failed with exit status {proc.returncode}", file=sys.stderr)
        return proc.returncode

    codes = results()
    total_k = total_n = 0
    print()
    print(f"{'area':<16} {'killed':>7} {'total':>6} {'score':>7}")
    for area, pats in SCOPES.items():
        names = sorted(n for n in codes if any(fnmatch.fnmatchcase(n, p) for p in pats))
        killed = [n for n in names if codes[n] in KILLED]
        left = [n for n in names if codes[n] not in KILLED]
        total_k += len(killed)
        total_n += len(names)
        score = len(killed) / len(names) if names else 1.0
        print(f"{area:<16} {len(killed):>7} {len(names):>6} {score:>7.1%}")
        if args.list:
            for n in left:
                print(f"    not killed ({codes[n]}): {n}")
    elapsed = time.monotonic() - started
    print(f"run time: {elapsed:.0f} s")
    print(f"mutation score: {total_k}/{total_n} killed")
    return 0 if total_n and total_k / total_n >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
