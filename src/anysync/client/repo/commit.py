"""Commits: one snapshot (backup) or one state of a sync folder.

Commit plaintext, version 1: canonical JSON (UTF-8, sorted keys, no spaces), e.g.

    {"v": 1, "kind": "backup", "tree": "<hex>", "parents": ["<hex>"], "ref": "<name>",
     "counter": 7, "time_ns": ..., "device_id": 3, "device": "laptop",
     "hostname": "laptop", "paths": ["/home/me/Documents"], "message": "", "stats": {...}}

`counter` is the parent's counter + 1: together with `parents` it lets a device refuse a
ref head that does not descend from the newest commit it has seen (rollback check).
Commits are few and small, so a readable, extensible encoding costs nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from anysync.errors import IntegrityError
from anysync.types import BlobId

VERSION = 1


@dataclass(frozen=True, slots=True)
class Commit:
    kind: str  # "backup" (later: "sync")
    tree: BlobId
    parents: tuple[BlobId, ...]
    ref: str
    counter: int
    time_ns: int
    device_id: int
    device: str
    hostname: str
    paths: tuple[str, ...] = ()
    message: str = ""
    stats: dict[str, int] = field(default_factory=dict)


def encode(c: Commit) -> bytes:
    doc: dict[str, Any] = {
        "v": VERSION,
        "kind": c.kind,
        "tree": c.tree.hex(),
        "parents": [p.hex() for p in c.parents],
        "ref": c.ref,
        "counter": c.counter,
        "time_ns": c.time_ns,
        "device_id": c.device_id,
        "device": c.device,
        "hostname": c.hostname,
        "paths": list(c.paths),
        "message": c.message,
        "stats": c.stats,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> Commit:
    try:
        doc = json.loads(data)
        if doc["v"] != VERSION:
            raise ValueError(f"unsupported commit version {doc['v']}")
        return Commit(
            kind=str(doc["kind"]),
            tree=BlobId.from_hex(doc["tree"]),
            parents=tuple(BlobId.from_hex(p) for p in doc["parents"]),
            ref=str(doc["ref"]),
            counter=int(doc["counter"]),
            time_ns=int(doc["time_ns"]),
            device_id=int(doc["device_id"]),
            device=str(doc["device"]),
            hostname=str(doc["hostname"]),
            paths=tuple(str(p) for p in doc["paths"]),
            message=str(doc["message"]),
            stats={str(k): int(v) for k, v in doc["stats"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"commit is malformed: {exc}") from None
