"""The prune benchmark keeps working: every tool forgets, prunes and checks the same
data; each frees space, each kept snapshot restores byte for byte (the run fails
otherwise), and AnySync's `check --read-data` is clean after its prune."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"anysync", "restic", "borg14"}
STEPS = {"forget", "prune", "check_read_data"}


@pytest.mark.slow
def test_prune_bench_quick_runs_and_verifies(tmp_path: Path) -> None:
    if os.geteuid() != 0 and not (shutil.which("restic") and shutil.which("borg")):
        pytest.skip("restic/borg are missing and installing them needs root")
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSYNC_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "prune_bench.py"), "--quick", "--rounds", "1",
         "--anysync-code", "installed",
         "--work-dir", str(tmp_path / "work"), "--results-dir", str(results)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # includes installing restic/borg on a fresh machine
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "every kept snapshot restored and verified after prune" in proc.stderr + proc.stdout
    doc = json.loads((results / "quick-prune-latest.json").read_text())
    assert set(doc["tools"]) == TOOLS, doc["notes"]
    seen = {(r["tool"], r["step"]) for r in doc["results"]}
    assert {(t, s) for t in TOOLS for s in STEPS} <= seen
    for tool, m in doc["summary"]["medians"].items():
        assert m["freed"] > 0, (tool, m)
    checks = [r for r in doc["results"] if r["step"] == "check_read_data"]
    assert not any("failed" in r.get("reported", {}) for r in checks), doc["notes"]
