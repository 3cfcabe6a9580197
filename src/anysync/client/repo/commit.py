"""Commits: one snapshot (backup) or one state of a sync folder.

Commit plaintext, version 1: canonical JSON (UTF-8, sorted keys, no spaces), e.g.

    {"v": 1, "kind": "backup", "tree": "<hex>", "parents": ["<hex>"], "ref": "<name>",
     "counter": 7, "time_ns": ..., "device_id": 3, "device": "laptop",
     "hostname": "laptop", "paths": ["/home/me/Documents"], "message": "", "stats": {...}}

`counter` is the parent's counter + 1: together with `parents` it lets a device refuse a
ref head that does not descend from the newest commit it has seen (rollback check).
Commits are few and small, so a readable, extensible encoding costs nothing.

Version 2 is version 1 plus two optional keys, written only when one is set (so every
other commit stays readable by version-1 clients):

    "edit": {"forget": ["<hex>"], "replace": [{"of": "<hex>", "commit": "<hex>"}],
             "retired": false, "policy": "<text>"}
    "retention": "<Policy.to_bytes() as text>"

An edit commit (kind "edit") forgets or replaces earlier snapshots of its ref without
rewriting anything (docs/design.md §14.4). `retention` is a sync folder's policy: an
edit commit sets it; sync commits copy it forward for the record (only an edit that
counts decides).

Version 3 is version 2 plus one optional key, written (with "v": 3) only when a backup
has tags, so untagged commits stay readable by older clients:

    "tags": ["work", "before-upgrade"]      (sorted, unique, each 1-64 printable chars)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from anysync.errors import IntegrityError
from anysync.types import BlobId

VERSION = 3
KINDS = ("backup", "sync", "edit")


@dataclass(frozen=True, slots=True)
class Edit:
    forget: tuple[BlobId, ...] = ()
    replace: tuple[tuple[BlobId, BlobId], ...] = ()  # (of, commit that replaces it)
    retired: bool = False  # a backup source whose every snapshot is forgotten
    policy: str = ""  # the retention policy that decided, for the record


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
    edit: Edit | None = None
    retention: str = ""  # a sync folder's policy (retention.Policy.to_bytes() as text)
    tags: tuple[str, ...] = ()  # a backup's `--tag`s, sorted (version 3)


def encode(c: Commit) -> bytes:
    doc: dict[str, Any] = {
        "v": 3 if c.tags else 2 if c.edit is not None or c.retention else 1,
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
    if c.edit is not None:
        doc["edit"] = {
            "forget": [f.hex() for f in c.edit.forget],
            "replace": [{"of": o.hex(), "commit": n.hex()} for o, n in c.edit.replace],
            "retired": c.edit.retired,
            "policy": c.edit.policy,
        }
    if c.retention:
        doc["retention"] = c.retention
    if c.tags:
        doc["tags"] = sorted(set(c.tags))
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> Commit:
    try:
        doc = json.loads(data)
        if doc["v"] not in (1, 2, VERSION):
            raise ValueError(f"unsupported commit version {doc['v']}")
        edit = doc.get("edit") if doc["v"] >= 2 else None
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
            edit=None if edit is None else _decode_edit(edit),
            retention=str(doc.get("retention", "")) if doc["v"] >= 2 else "",
            tags=tuple(str(t) for t in doc.get("tags", ())) if doc["v"] >= 3 else (),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"commit is malformed: {exc}") from None


def _decode_edit(doc: dict[str, Any]) -> Edit:
    return Edit(
        forget=tuple(BlobId.from_hex(f) for f in doc["forget"]),
        replace=tuple(
            (BlobId.from_hex(r["of"]), BlobId.from_hex(r["commit"])) for r in doc["replace"]
        ),
        retired=bool(doc["retired"]),
        policy=str(doc["policy"]),
    )
