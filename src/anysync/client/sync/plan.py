"""What a pass must do to the disk, decided apart from doing it. Pure: no I/O.

Input: the merged state (what the folder must hold), the disk as the scan saw it, and
the records (what this device last agreed on). Output: an ordered list of actions, each
with the stat its path must still have right before it runs (`expect`; None = absent),
plus the records to keep or drop without any I/O and the paths that cannot be applied
("stuck", with the reason).

Order: moves (a chain b→c, a→b in dependency order, checked against a model of the disk
as the earlier moves leave it), then removals deepest first (deletions, and the old entry
of a path whose type changes), then directories shallowest first, then symlinks and
downloads. A local entry is replaced or removed only if it is what this device last
agreed on, or it was moved away first (a conflict's loser goes to its copy before the
winner is written): a local change is never overwritten.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from anysync.client.localfs import StatKey
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat, same
from anysync.client.sync.state import Record

NAME_MAX = 255


class Op(enum.Enum):
    MOVE = "move"  # rename src (a local file with the wanted content) to path
    REMOVE = "remove"  # unlink a file/symlink still as expected; rmdir an empty dir
    MKDIR = "mkdir"
    SYMLINK = "symlink"
    DOWNLOAD = "download"


@dataclass(frozen=True, slots=True)
class Action:
    op: Op
    path: bytes
    entry: TreeEntry | None  # what the path holds afterwards (None: nothing)
    expect: StatKey | None  # the path's stat right before (None: must be absent)
    src: bytes = b""  # MOVE: where the content is now
    expect_src: StatKey | None = None
    needs: bytes | None = None  # a removal that must have succeeded first
    is_dir: bool = False  # REMOVE of a directory


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    keep: dict[bytes, Record] = field(default_factory=dict)  # rows that change, no I/O
    drop: set[bytes] = field(default_factory=set)
    stuck: dict[bytes, str] = field(default_factory=dict)

    def intents(self) -> dict[bytes, TreeEntry | None]:
        """Per path the executor may change: the entry it will hold, or None (absent)."""
        out: dict[bytes, TreeEntry | None] = {}
        for a in self.actions:
            if a.op is Op.MOVE:
                out.setdefault(a.src, None)
            out[a.path] = a.entry
        return out


def _too_long(path: bytes, name_max: int) -> bool:
    return any(len(part) > name_max for part in path.split(b"/"))


def plan(
    merged: Flat,
    disk: Flat,
    stats: dict[bytes, StatKey],
    records: dict[bytes, Record],
    managed: Callable[[bytes, TreeEntry | None], bool],
    name_max: int = NAME_MAX,
) -> Plan:
    out = Plan()
    # `managed` (ignore rules) is the dear test: asked last, of the paths that differ.
    wanted = {p: e for p, e in merged.items() if not same(disk.get(p), e) and managed(p, e)}
    for p, e in merged.items():
        if p in disk and p not in wanted:
            row = Record(e, stats[p])
            if records.get(p) != row and managed(p, e):
                out.keep[p] = row
    out.drop = {p for p in records if p not in merged}
    for p in [p for p in wanted if _too_long(p, name_max)]:
        out.stuck[p] = "name too long for this file system"
        del wanted[p]

    def agreed(p: bytes) -> bool:
        """The disk entry at p is what this device last agreed on: safe to replace."""
        r = records.get(p)
        if r is None:
            return False
        if r.entry.type is EntryType.DIR:
            return disk[p].type is EntryType.DIR
        return same(r.entry, disk[p])

    model: dict[bytes, StatKey | None] = dict(stats)  # the disk as earlier actions leave it
    moved_away = _plan_moves(out, merged, wanted, disk, stats, model, agreed)

    removals: list[Action] = []
    for p in disk:
        if p in merged or p in moved_away:
            continue
        is_dir = disk[p].type is EntryType.DIR
        if is_dir or agreed(p):
            removals.append(Action(Op.REMOVE, p, None, stats[p], is_dir=is_dir))
        else:
            out.stuck[p] = "changed here since the last sync; kept"
            out.drop.discard(p)
    replaced: set[bytes] = set()
    for p, e in wanted.items():
        if p not in disk or p in moved_away or model.get(p) is None:
            continue
        is_dir = disk[p].type is EntryType.DIR
        if is_dir == (e.type is EntryType.DIR):
            continue  # replaced by a rename (file ↔ symlink), or only a dir's mode changes
        if is_dir or agreed(p):
            removals.append(Action(Op.REMOVE, p, None, stats[p], is_dir=is_dir))
            replaced.add(p)
            model[p] = None
    out.actions += sorted(removals, key=lambda a: (-a.path.count(b"/"), a.path))

    done = _moved_to(out)
    for p in sorted(wanted, key=lambda p: (p.count(b"/"), p)):
        e = wanted[p]
        if p in done:
            continue
        needs = p if p in replaced else None
        if e.type is EntryType.DIR:
            out.actions.append(Action(Op.MKDIR, p, e, model.get(p), needs=needs))
            continue
        if p in disk and model.get(p) is not None and not agreed(p):
            out.stuck[p] = "changed here since the last sync; kept"
            continue
        op = Op.SYMLINK if e.type is EntryType.SYMLINK else Op.DOWNLOAD
        out.actions.append(Action(op, p, e, model.get(p), needs=needs))
    # Directories before what goes inside them; downloads last (the executor batches them).
    out.actions.sort(key=lambda a: _RANK[a.op])  # stable: each group keeps its order
    return out


_RANK = {Op.MOVE: 0, Op.REMOVE: 1, Op.MKDIR: 2, Op.SYMLINK: 3, Op.DOWNLOAD: 4}


def _moved_to(out: Plan) -> set[bytes]:
    return {a.path for a in out.actions if a.op is Op.MOVE}


def _plan_moves(
    out: Plan,
    merged: Flat,
    wanted: Flat,
    disk: Flat,
    stats: dict[bytes, StatKey],
    model: dict[bytes, StatKey | None],
    agreed: Callable[[bytes], bool],
) -> set[bytes]:
    """Local files whose content is wanted at another path are renamed, not downloaded.
    Returns the paths moved away."""
    sources: dict[object, list[bytes]] = defaultdict(list)
    # Only an entry that must leave its path (gone, or replaced there) is a source.
    for p in sorted(p for p in disk if p in wanted or p not in merged):
        if _content(disk[p]) is not None:
            sources[_content(disk[p])].append(p)
    used: set[bytes] = set()
    pending: dict[bytes, bytes] = {}  # dst → src
    for p in sorted(wanted):
        key = _content(wanted[p])
        if key is None:
            continue
        src = next((s for s in sources.get(key, []) if s != p and s not in used), None)
        if src is not None:
            used.add(src)
            pending[p] = src
    moved_away: set[bytes] = set()
    progressed = True
    while pending and progressed:
        progressed = False
        for dst in sorted(pending):
            src = pending[dst]
            occupant = model.get(dst)
            if occupant is not None and dst in pending.values():
                continue  # dst still holds content another move needs: that one first
            del pending[dst]
            progressed = True
            if occupant is not None and (disk[dst].type is EntryType.DIR or not agreed(dst)):
                continue  # never rename over a directory or a local change
            out.actions.append(Action(Op.MOVE, dst, wanted[dst], occupant, src, stats[src]))
            model[src] = None
            model[dst] = stats[src]
            moved_away.add(src)
    return moved_away  # what is left in `pending` (a cycle) is downloaded instead


def _content(e: TreeEntry) -> object:
    """What a rename carries: a file's chunks or a symlink's target (None: nothing)."""
    if e.type is EntryType.FILE and e.chunks:
        return e.chunks
    if e.type is EntryType.SYMLINK:
        return (b"link", e.target)
    return None
