"""anysync versions / restore-version: every version of a synced file, and bringing one back."""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

from anysync.cli import common
from anysync.client.forget import CountingEdits
from anysync.client.progress import human_bytes
from anysync.client.sync import engine
from anysync.client.sync.state import SyncState
from anysync.client.sync.versions import restore_version, versions


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("versions", help="list every version of a file in a sync folder")
    p.add_argument("path", type=Path, help="a file in a sync folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_password_option(p)
    p.set_defaults(run=run_versions)
    r = sub.add_parser("restore-version", help="bring back an earlier version of a file")
    r.add_argument("path", type=Path, help="a file in a sync folder")
    r.add_argument("--version", required=True, help="version ID from `anysync versions`")
    r.add_argument("--to", type=Path, help="write it here instead of over the file")
    common.add_password_option(r)
    r.set_defaults(run=run_restore_version)


def run_versions(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        folder, rel = SyncState(s.state).folder_for(args.path)
        counting = CountingEdits(s.remote, folder.ref)
        found = versions(s.repo, s.remote, s.state, folder, rel, common.print_warning, counting)
    rows = [
        {
            "version": v.snapshot.id.hex(),
            "time": v.snapshot.commit.time_ns / 1e9,
            "device": v.snapshot.commit.device,
            "size": v.entry.size if v.entry else None,
            "deleted": v.entry is None,
        }
        for v in found
    ]
    if args.json:
        common.print_json(rows)
        return 0
    common.print_table(
        ["VERSION", "TIME", "DEVICE", "SIZE"],
        [
            [
                str(r["version"])[:8],
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(r["time"])))),
                str(r["device"]),
                "deleted" if r["deleted"] else human_bytes(int(str(r["size"]))),
            ]
            for r in rows
        ],
    )
    return 0


def run_restore_version(args: argparse.Namespace) -> int:
    with common.open_session(args) as s:
        folder, rel = SyncState(s.state).folder_for(args.path)
        dest = Path(os.path.abspath(args.to or args.path))
        device = engine.Device(s.config.device_id, s.config.device_name, socket.gethostname())
        save_as = device if args.to is None else None
        r = restore_version(
            s.repo,
            s.remote,
            s.state,
            folder,
            rel,
            args.version,
            dest,
            s.home.root,
            save_as,
            CountingEdits(s.remote, folder.ref),
        )
        print(f"restored version {args.version} to {dest}")
        if r is not None and r.committed:
            print(f"{folder.name}: saved as new version {r.committed.short()}")
    return 0
