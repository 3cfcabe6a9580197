"""The scale benchmark (#15) keeps working: D4 is deterministic and its sizes grow as
prefixes of one tree, and a quick run backs up D4 twice with AnySync and restic."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.datasets import make_d4  # noqa: E402

TOOLS = {"anysync", "restic"}
STEPS = {"backup_first", "backup_nochange"}


def _digest(tree: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(tree):
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(tree))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_d4_is_deterministic_and_a_prefix(tmp_path: Path) -> None:
    one, info, made = make_d4(tmp_path / "a", 3_000, workers=1)
    two, _, _ = make_d4(tmp_path / "b", 3_000, workers=2)
    small, _, _ = make_d4(tmp_path / "c", 1_000, workers=2)
    assert made and info.files == 3_000
    big = _digest(one)
    assert len(big) == 3_000 and big == _digest(two)
    empty = hashlib.sha256(b"").hexdigest()
    full = [h for h in big.values() if h != empty]
    assert len(set(full)) == len(full) > 2_900  # nothing but empty files dedups
    part = _digest(small)
    assert len(part) == 1_000 and part.items() <= big.items()
    assert make_d4(tmp_path / "a", 3_000)[2] is False  # reused


@pytest.mark.slow
def test_scale_bench_quick_runs_every_step(tmp_path: Path) -> None:
    if os.geteuid() != 0 and not shutil.which("restic"):
        pytest.skip("restic is missing and installing it needs root")
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSYNC_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale_bench.py"), "--quick",
         "--work-dir", str(tmp_path / "work"), "--results-dir", str(results)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # includes installing restic on a fresh machine
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    doc = json.loads((results / "quick-scale-latest.json").read_text())
    assert set(doc["tools"]) == TOOLS
    assert doc["data"][0]["files"] == doc["sizes"][0] > 0
    seen = {(r["tool"], r["step"]) for r in doc["results"]}
    assert seen == {(t, s) for t in TOOLS for s in STEPS}
    for r in doc["results"]:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["client_peak_rss"] > 0, r
        if r["tool"] == "anysync":
            assert r["server_peak_rss"] > 0, r
        if r["step"] == "backup_first":
            assert r["bytes_added"] > 0, r
    assert {t["figure"] for t in doc["targets"]} >= {"AnySync client peak RSS (MiB)"}
    assert (results / "quick-scale-latest.md").read_text().startswith("# AnySync scale")
