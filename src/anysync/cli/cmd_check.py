"""anysync check: verify every snapshot of the account without trusting the server."""

from __future__ import annotations

import argparse
import sys

from anysync.cli import common
from anysync.client.check import check, report_lines
from anysync.client.forget import CountingEdits
from anysync.client.progress import human_bytes
from anysync.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="verify every snapshot: history, directory listings, index, packs",
        description=(
            "Load and authenticate every ref's history and every directory listing, and "
            "make sure the server's index and packs hold every chunk a file names. "
            "--read-data also downloads and authenticates the chunks. Exit 0: clean; "
            "6: damage found (listed by snapshot and file)."
        ),
    )
    reading = p.add_mutually_exclusive_group()
    reading.add_argument(
        "--read-data", action="store_true", help="download and authenticate every chunk"
    )
    reading.add_argument(
        "--read-data-subset",
        metavar="PERCENT",
        help="download and authenticate the chunks of this share of the packs, e.g. 10%%",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_password_option(p)
    p.set_defaults(run=run)


def read_fraction(args: argparse.Namespace) -> float:
    if args.read_data:
        return 1.0
    if args.read_data_subset is None:
        return 0.0
    text = args.read_data_subset.strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        percent = -1.0
    if not 0 < percent <= 100:
        raise UsageError(
            f"--read-data-subset takes a share of the packs from 0 to 100%, "
            f"not {args.read_data_subset!r}"
        )
    return percent / 100


def run(args: argparse.Namespace) -> int:
    fraction = read_fraction(args)
    with common.open_session(args) as s:
        result = check(s.refs, s.repo, s.remote, CountingEdits(s.remote), fraction)
    if args.json:
        common.print_json(
            {
                "clean": result.clean,
                "refs": result.refs,
                "snapshots": result.snapshots,
                "trees": result.trees,
                "chunks": result.chunks,
                "packs": result.packs,
                "chunks_read": result.chunks_read,
                "bytes_read": result.bytes_read,
                "history": result.history,
                "index": result.index,
                "notes": result.notes,
                "damaged": [
                    {
                        "snapshot": d.snapshot.id.hex(),
                        "label": d.label,
                        "files": [{"path": p, "problem": w} for p, w in d.files],
                    }
                    for d in result.damaged
                ],
            }
        )
    else:
        for line in report_lines(result):
            print(line, file=sys.stderr)
        read = (
            f"; read and authenticated {result.chunks_read} chunks "
            f"({human_bytes(result.bytes_read)})"
            if fraction
            else ""
        )
        verdict = "no damage found" if result.clean else "DAMAGE FOUND (listed above)"
        print(
            f"checked {result.refs} refs, {result.snapshots} snapshots, {result.trees} "
            f"directories, {result.chunks} chunks in {result.packs} packs{read}: {verdict}"
        )
    return 0 if result.clean else 6
