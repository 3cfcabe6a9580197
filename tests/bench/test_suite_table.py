"""`make bench`'s target table (bench/suite.py): every target of issue #15 appears, with
its verdict read from the parts' results; a part that did not run shows as not measured,
never as met. Pure logic over result documents shaped like the parts write them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import suite  # noqa: E402

DATE = "2026-12-01"


def _write(results: Path, name: str, doc: dict[str, object]) -> None:
    (results / name).write_text(json.dumps(doc))


def _sync_scale(change_cpu: float, latency: float) -> dict[str, object]:
    passes = [{"cpu_s": change_cpu, "wall_s": 1.0, "peak_rss_mib": 90.0}] * 3
    return {
        "change_a": passes,
        "fetch_b": passes,
        "watch": {"latency_s": [latency] * 3, "rss_mib_a": 80.0, "rss_mib_b": 85.0},
    }


def test_nothing_measured_is_never_met(tmp_path: Path) -> None:
    rows = suite.table(tmp_path, DATE)
    bounded = [r for r in rows if not r.reported]
    assert bounded and all(r.verdict() == "not measured" for r in bounded)
    text = suite.markdown(rows, DATE, [])
    assert f"0 met, 0 missed, {len(bounded)} not measured" in text


def test_verdicts_come_from_the_parts_results(tmp_path: Path) -> None:
    _write(tmp_path, f"full-{DATE}.json", {"targets": [
        {"target": "first backup of D1", "measured": "1.50x", "met": False, "missed_by": 1.5},
        {"target": "full restore of D2", "measured": "0.90x", "met": True, "missed_by": None},
    ]})  # fmt: skip
    _write(tmp_path, f"scale-{DATE}.json", {
        "targets": [{"figure": "AnySync client peak RSS (MiB)", "files": 1_000_000,
                     "value": "512", "target": "<= 256", "met": False}],
        "growth": [{"tool": "anysync", "step": "backup_first", "mib_per_100k": 20.0}],
    })  # fmt: skip
    _write(tmp_path, f"index-{DATE}.json", {
        "median_ms": 40.0, "rows": 1_200_000, "db_bytes": 200 * 2**20, "bytes_per_row": 170.0,
    })  # fmt: skip
    _write(tmp_path, f"sync-full-{DATE}.json", {
        "summary": {
            "anysync": {"big_s": 8.0, "peak_A_mib": 200.0, "peak_B_mib": 100.0},
            "syncthing": {"big_s": 4.0, "peak_A_mib": 100.0, "peak_B_mib": 100.0},
        },
        "ratios": {"big_s": 2.0, "peak_A_mib": 2.0, "peak_B_mib": 1.0},
    })  # fmt: skip
    _write(tmp_path, f"sync-scale-100k-{DATE}.json", _sync_scale(1.0, 0.5))
    _write(tmp_path, f"sync-scale-1M-{DATE}.json", _sync_scale(5.0, 3.0))

    rows = {r.target: r for r in suite.table(tmp_path, DATE)}
    assert rows["first backup of D1"].verdict() == "**no** (1.50x the bound)"
    assert rows["full restore of D2"].verdict() == "yes"
    assert rows["AnySync client peak RSS (MiB) at 1,000,000 files <= 256"].missed_by == 2.0
    assert rows["client peak RSS growth per 100k files"].verdict() == "reported"
    index = next(r for t, r in rows.items() if t.startswith("FindBlobs"))
    assert index.met is True and "200 MiB" in index.measured
    assert rows["500 MB file A -> B: time <= Syncthing's"].missed_by == 2.0
    assert rows["peak RSS of each device <= Syncthing's"].missed_by == 2.0
    watch = [r for t, r in rows.items() if t.startswith("one changed file")]
    assert [r.met for r in watch] == [True, False]
    o_change = next(r for t, r in rows.items() if "O(change)" in t)
    assert o_change.missed_by == 2.5  # 5x the CPU for 10x the files: bound 2
    text = suite.markdown(list(rows.values()), DATE, ["a note"])
    assert "not measured" not in text.split("| area |")[1]
    assert "- a note" in text
