"""`make bench-quick` keeps working: every step of every tool runs, every restore verifies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = {
    "backup_d1_first",
    "backup_d2_first",
    "backup_d1_nochange",
    "backup_d3",
    "restore_d2_full",
    "restore_d1_full",
    "restore_d1_file",
}
TOOLS = {"anysync", "restic", "borg14"}


@pytest.mark.slow
def test_bench_quick_runs_and_verifies(tmp_path: Path) -> None:
    if os.geteuid() != 0 and not (shutil.which("restic") and shutil.which("borg")):
        pytest.skip("restic/borg are missing and installing them needs root")
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSYNC_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--rounds", "1",
         "--work-dir", str(tmp_path / "work"), "--results-dir", str(results)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # includes installing restic/borg and building borg 1.4 on a fresh machine
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    doc = json.loads((results / "quick-latest.json").read_text())
    assert set(doc["tools"]) == TOOLS, doc["notes"]
    seen = {(r["tool"], r["step"]) for r in doc["results"]}
    assert seen == {(t, s) for t in TOOLS for s in STEPS}
    for r in doc["results"]:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss"] > 0, r
        if r["step"].startswith("restore"):
            assert r["verified"] is True, r
        if r["step"] in ("backup_d1_first", "backup_d2_first"):
            assert r["bytes_added"] > 0, r
    assert all(s in doc["summary"] for s in STEPS)
    assert len(doc["targets"]) >= 5
    # The server at rest and the command start (issue #15), measured every round.
    assert doc["idle"]["server_rss_fresh"] > 0 and doc["idle"]["server_rss_after"] > 0
    assert 0 < doc["idle"]["snapshots_wall_s"] < 60
    assert any("snapshots" in t["target"] for t in doc["targets"])
    assert (results / "quick-latest.md").read_text().startswith("# AnySync benchmark")
