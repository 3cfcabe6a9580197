"""The drive benchmark keeps working: a quick run mounts real drives, measures every
figure and writes a well-formed report. No timing is asserted (a shared machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.fusetools import requires_fuse

ROOT = Path(__file__).resolve().parents[2]
# Every figure of the report's table except rclone's (skipped: its S3 server is slow to start).
FIGURES = {
    "ls_cold_s", "ls_warm_s", "find_cold_s", "find_warm_s", "listing_content_bytes",
    "first_byte_ms", "seq_uncached_mibs", "restore_mibs", "ratio_restore", "seq_cached_mibs",
    "seq_pagecache_mibs", "visible_s", "rss_mib", "rss_peak_mib", "rss_flat_mib",
}  # fmt: skip


@pytest.mark.slow
@requires_fuse
def test_drive_bench_quick_writes_a_complete_report(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSYNC_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "drive_bench.py"), "--quick", "--skip-rclone",
         "--work-dir", str(tmp_path / "work"), "--results-dir", str(results)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    doc = json.loads((results / "quick-drive-latest.json").read_text())
    assert doc["failed"] is None, doc["notes"]
    measures = doc["measures"]
    assert measures.keys() >= FIGURES, FIGURES - measures.keys()
    for key in FIGURES:
        assert isinstance(measures[key], int | float) and measures[key] >= 0, (key, measures[key])
    assert measures["listing_content_bytes"] == 0  # listings never read content
    assert "rclone: skipped (--skip-rclone)" in doc["notes"]

    md = (results / "quick-drive-latest.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| figure | target | measured | met |"
    rows = table[1:]
    assert len(rows) >= len(FIGURES)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4, row
        assert cells[3] in {"**yes**", "**no**", "—"}, row
    measured = [r for r in rows if "not measured" not in r]
    assert len(measured) >= len(FIGURES), rows
    assert "Machine:" in md and "cores" in md
