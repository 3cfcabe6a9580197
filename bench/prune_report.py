"""The prune benchmark's figures, medians, AnySync/peer ratios and Markdown table."""

from __future__ import annotations

import statistics
from typing import Any

MiB = 1024 * 1024
PRIMARY = "anysync"

# figure -> (label, unit); the order of the table.
FIGURES: dict[str, tuple[str, str]] = {
    "backups_s": ("four backups (D1, D2, D1 changed, D2 changed), wall", "s"),
    "repo_before": ("repository after the four backups", "MiB"),
    "forget_s": ("forget 2 of 4 snapshots, wall", "s"),
    "forget_peak": ("forget, peak RSS", "MiB"),
    "prune_s": ("prune / compact, wall", "s"),
    "prune_cpu_s": ("prune / compact, CPU (user+sys)", "s"),
    "prune_peak": ("prune / compact, peak RSS", "MiB"),
    "forget_prune_s": ("forget + prune, wall", "s"),
    "repo_after": ("repository after prune", "MiB"),
    "freed": ("bytes freed", "MiB"),
    "freed_pct": ("share of the repository freed", "%"),
    "check_s": ("check --read-data, wall", "s"),
    "check_cpu_s": ("check --read-data, CPU (user+sys)", "s"),
    "check_peak": ("check --read-data, peak RSS", "MiB"),
}
# AnySync only: the client and the server apart (the peaks above are their sum).
SPLIT = {
    "forget": "forget",
    "prune": "prune",
    "check_read_data": "check --read-data",
}


def _rec(results: list[dict[str, Any]], rnd: int, tool: str, step: str) -> dict[str, Any]:
    return next(r for r in results if (r["round"], r["tool"], r["step"]) == (rnd, tool, step))


def figures(results: list[dict[str, Any]], rnd: int, tool: str) -> dict[str, float]:
    """One tool's figures of one round."""

    def rec(step: str) -> dict[str, Any]:
        return _rec(results, rnd, tool, step)

    backups = [rec(s) for s in ("backup_1_d1", "backup_2_d2", "backup_3_d1_changed")]
    last_backup, forget, prune, check = (
        rec(s) for s in ("backup_4_d2_changed", "forget", "prune", "check_read_data")
    )
    before = float(last_backup["repo_bytes"])
    after = float(prune.get("repo_bytes_settled", prune["repo_bytes"]))
    return {
        "backups_s": sum(r["wall_s"] for r in [*backups, last_backup]),
        "repo_before": before,
        "forget_s": forget["wall_s"],
        "forget_peak": forget["peak_rss"],
        "prune_s": prune["wall_s"],
        "prune_cpu_s": prune["cpu_s"],
        "prune_peak": prune["peak_rss"],
        "forget_prune_s": forget["wall_s"] + prune["wall_s"],
        "repo_after": after,
        "freed": before - after,
        "freed_pct": 100 * (before - after) / before if before else 0.0,
        "check_s": check["wall_s"],
        "check_cpu_s": check["cpu_s"],
        "check_peak": check["peak_rss"],
    }


def summarize(results: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """{"medians": {tool: {figure: median}}, "ratios": {peer: {figure: median ratio}},
    "split": {step: {client_peak_rss, server_peak_rss, client_cpu_s, server_cpu_s}}}."""
    rounds = sorted({r["round"] for r in results})
    per_round = {t: {n: figures(results, n, t) for n in rounds} for t in tools}
    medians = {
        t: {f: statistics.median(per_round[t][n][f] for n in rounds) for f in FIGURES}
        for t in tools
    }
    ratios: dict[str, dict[str, float | None]] = {}
    if PRIMARY in tools:
        for peer in (t for t in tools if t != PRIMARY):
            ratios[peer] = {}
            for f in FIGURES:
                each = [
                    per_round[PRIMARY][n][f] / per_round[peer][n][f]
                    for n in rounds
                    if per_round[peer][n][f] > 0
                ]
                ratios[peer][f] = statistics.median(each) if each else None
    split: dict[str, dict[str, float]] = {}
    if PRIMARY in tools:
        keys = ("client_peak_rss", "server_peak_rss", "client_cpu_s", "server_cpu_s")
        for step in SPLIT:
            rows = [_rec(results, n, PRIMARY, step) for n in rounds]
            split[step] = {k: statistics.median(r[k] for r in rows) for k in keys}
    return {"medians": medians, "ratios": ratios, "split": split}


def _fmt(unit: str, v: float | None) -> str:
    if v is None:
        return "–"
    if unit == "MiB":
        return f"{v / MiB:,.1f}"
    if unit == "%":
        return f"{v:.1f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def table(summary: dict[str, Any], tools: list[str]) -> list[str]:
    peers = [t for t in tools if t != PRIMARY] if PRIMARY in tools else []
    head = ["figure", *tools, *(f"{PRIMARY}/{p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f, (label, unit) in FIGURES.items():
        cells = [f"{label} ({unit})"]
        cells += [_fmt(unit, summary["medians"][t][f]) for t in tools]
        for p in peers:
            r = summary["ratios"][p][f]
            cells.append("–" if r is None else f"{r:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    tools: list[str] = doc["tools"]
    summary = doc["summary"]
    change = doc["data"].get("change", {})
    out = [
        f"# Prune benchmark, {doc['mode']} data, {doc['date']}",
        "",
        f"{doc['rounds']} round(s); medians; ratios are AnySync/peer (below 1: AnySync is "
        "faster, smaller, or freed less). Peak RSS of AnySync = client + server.",
        "",
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['nproc']} cores, "
        f"{doc['machine']['ram_gib']:.0f} GiB RAM, {doc['machine']['os']}.",
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in doc["versions"].items()) + ".",
        "",
        f"Data: D1 {doc['data']['d1_files']:,} files ({doc['data']['d1_bytes'] / MiB:,.0f} MiB), "
        f"D2 {doc['data']['d2_bytes'] / MiB:,.0f} MiB. Between the two pairs of snapshots: "
        f"{change.get('d1_files_rewritten', 0):,} files of D1 rewritten "
        f"({change.get('d1_bytes_rewritten', 0) / MiB:,.0f} MiB), "
        f"{change.get('d1_files_deleted', 0):,} deleted, "
        f"{change.get('d2_files_replaced', 0)} files of D2 replaced "
        f"({change.get('d2_bytes_replaced', 0) / MiB:,.0f} MiB). The first pair is forgotten.",
        "",
        *table(summary, tools),
        "",
    ]
    settings = doc.get("settings", {})
    out.append(
        f"Commands: AnySync `anysync forget --json S1 S2`, `anysync prune --max-unused "
        f"{settings.get('max_unused', '5%')} --json`, `anysync check --read-data --json` "
        f"(server run with `{' '.join(settings.get('anysync_server', []))}`); restic "
        f"`forget ID1 ID2`, `prune --max-unused {settings.get('max_unused', '5%')}`, "
        f"`check --read-data`; borg `delete ::A1 A2`, `compact --threshold "
        f"{settings.get('borg_compact_threshold', '10')}`, `check --verify-data`."
    )
    out.append("")
    if summary.get("split"):
        parts = [
            f"{label}: client peak {summary['split'][s]['client_peak_rss'] / MiB:.0f} MiB, "
            f"server peak {summary['split'][s]['server_peak_rss'] / MiB:.0f} MiB, "
            f"client CPU {summary['split'][s]['client_cpu_s']:.1f} s, "
            f"server CPU {summary['split'][s]['server_cpu_s']:.1f} s"
            for s, label in SPLIT.items()
        ]
        out += ["AnySync split (medians): " + "; ".join(parts) + ".", ""]
    settle = [
        f"{r['tool']} {r['settle_s']} s"
        for r in doc["results"]
        if r["step"] == "prune" and "settle_s" in r
    ]
    if settle:
        out += [
            "Repository size after prune is taken once it stops changing (sampled every "
            "0.25 s, outside the timed step): " + ", ".join(settle) + ".",
            "",
        ]
    noise = [
        f"{r['tool']} {r['step']} {r['foreign_cpu_s']:.1f} s"
        for r in doc["results"]
        if r["step"] in SPLIT and r.get("foreign_cpu_s", 0) >= 1.0
    ]
    if noise:
        out += [
            "Noise: CPU time other processes on this machine used during a step (at least "
            "1 s): " + ", ".join(noise) + ".",
            "",
        ]
    for note in doc.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"
