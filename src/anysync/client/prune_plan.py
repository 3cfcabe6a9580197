"""Prune's decisions (docs/prune-design.md §6): what the refs reach, and which packs may go.

Pure logic: commits and trees come from loaders handed in, packs from a listing, so that
the rules are tested without a server. prune.py does the I/O.

- **Mark.** Roots are every current ref head and every ref_history head. Every commit on
  a root's chain (all parents) is kept. Trees are kept for each head, for every commit on
  the chain that a counting edit did not forget, and for replacement commits. An edit
  counts only if ref_history says a manage device wrote it (§5), so an append-only
  device cannot forget anything. A history head outside its ref's current chain (a
  rewind) is reported and kept like a head of its own.
- **Plan.** Each marked blob keeps one chosen copy; packs holding no chosen copy are
  dead; the emptiest live packs are repacked until the unused share is small enough.
- **Condemnable.** Right before every CondemnPacks: a pack may go only if every marked
  blob in it has a copy in a live pack outside the set being condemned.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from anysync.client.repo.commit import Commit
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import AnySyncError, IntegrityError, UsageError
from anysync.types import BlobId, BlobKind, BlobLocation, PackId

CommitLoader = Callable[[BlobId], Commit]  # raises NotFound / IntegrityError
# Trees by ID; a tree that cannot be read maps to its error.
TreeLoader = Callable[[Sequence[BlobId]], Mapping[BlobId, "list[TreeEntry] | AnySyncError"]]


class Unreadable(IntegrityError):
    """A commit or tree a root reaches cannot be read: it may reference anything, so
    nothing may be condemned."""


class HistoryRow(Protocol):
    """One ref_history row (remote.RefVersion has these)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def commit_id(self) -> BlobId: ...
    @property
    def device_id(self) -> int: ...
    @property
    def by_manage(self) -> bool: ...


class ListedPack(Protocol):
    """One live pack of ListPacks (remote.PackInfo has these)."""

    @property
    def pack_id(self) -> PackId: ...
    @property
    def size(self) -> int: ...
    @property
    def created_at(self) -> int: ...
    @property
    def entries(self) -> Sequence[BlobLocation]: ...


def newest_heads(rows: Iterable[HistoryRow]) -> dict[str, BlobId]:
    """Each ref's newest version among `rows`: its head once they are applied."""
    newest: dict[str, HistoryRow] = {}
    for r in rows:
        if r.name not in newest or r.version > newest[r.name].version:
            newest[r.name] = r
    return {name: r.commit_id for name, r in newest.items()}


@dataclass
class Marker:
    """Everything the roots reach, grown as roots are added (marks only ever grow)."""

    load_commit: CommitLoader
    load_trees: TreeLoader
    marked: dict[BlobId, BlobKind] = field(default_factory=dict)
    rewinds: dict[tuple[str, int], str] = field(default_factory=dict)  # reported once each
    _heads: dict[str, BlobId] = field(default_factory=dict)
    _rows: dict[str, dict[int, HistoryRow]] = field(default_factory=lambda: defaultdict(dict))
    _commits: dict[BlobId, Commit] = field(default_factory=dict)  # loaded once per run
    _trees_done: set[BlobId] = field(default_factory=set)
    _trees_todo: set[BlobId] = field(default_factory=set)

    def add(self, heads: Mapping[str, BlobId], rows: Iterable[HistoryRow]) -> None:
        """Mark from these current heads and history rows (the first listing, or the rows
        a RefsChanged brought); refs they touch are marked again with what is known."""
        touched = set(heads)
        self._heads.update(heads)
        for r in rows:
            self._rows[r.name][r.version] = r
            touched.add(r.name)
        for name in sorted(touched):
            self._mark_ref(name)
        self._mark_trees()

    def _mark_ref(self, name: str) -> None:
        rows = self._rows.get(name, {})
        counting = {r.commit_id for r in rows.values() if r.by_manage}
        covered: set[BlobId] = set()
        head = self._heads.get(name)
        if head is not None:
            covered = self._mark_chain(name, head, counting)
        # Newest first: an older rewound version under a newer one is covered by it.
        for version in sorted(rows, reverse=True):
            r = rows[version]
            if r.commit_id in covered:
                continue  # an ancestor of what is kept already: adds nothing
            self.rewinds[(name, version)] = (
                f"ref {name[:12]}: version {version} by device {r.device_id} is not in the "
                "current history; kept"
            )
            covered |= self._mark_chain(name, r.commit_id, counting)

    def _mark_chain(self, name: str, head: BlobId, counting: set[BlobId]) -> set[BlobId]:
        """Mark the commits of `head`'s chain and queue the trees it keeps; its commit IDs."""
        chain = self._walk(name, head)
        forgotten: set[BlobId] = set()
        replacements: list[BlobId] = []
        for cid in chain:
            edit = self._commits[cid].edit
            if edit is not None and cid in counting:
                forgotten.update(edit.forget)
                replacements += [new for _, new in edit.replace]
        self._trees_todo.add(self._commits[head].tree)
        self._trees_todo.update(self._commits[c].tree for c in chain if c not in forgotten)
        for new in replacements:
            self._walk(name, new)
            if new not in forgotten:
                self._trees_todo.add(self._commits[new].tree)
        return chain

    def _walk(self, name: str, head: BlobId) -> set[BlobId]:
        """Every commit reachable from `head` through all parents, each marked."""
        seen: set[BlobId] = set()
        todo = [head]
        while todo:
            cid = todo.pop()
            if cid in seen:
                continue
            seen.add(cid)
            self.marked[cid] = BlobKind.COMMIT
            todo.extend(self._commit(name, cid).parents)
        return seen

    def _commit(self, name: str, cid: BlobId) -> Commit:
        c = self._commits.get(cid)
        if c is None:
            try:
                c = self._commits[cid] = self.load_commit(cid)
            except AnySyncError as exc:
                raise Unreadable(
                    f"commit {cid.short()} of ref {name[:12]} cannot be read ({exc.message}); "
                    "nothing was deleted: run `anysync check`"
                ) from None
        return c

    def _mark_trees(self) -> None:
        """Mark the queued trees, their subtrees and chunks, a level at a time."""
        level = sorted(self._trees_todo - self._trees_done)
        self._trees_todo.clear()
        while level:
            self._trees_done.update(level)
            loaded = self.load_trees(level)
            below: set[BlobId] = set()
            for tid in level:
                entries = loaded.get(tid)
                if not isinstance(entries, list):
                    why = entries.message if entries is not None else "not loaded"
                    raise Unreadable(
                        f"directory listing {tid.short()} cannot be read ({why}); "
                        "nothing was deleted: run `anysync check`"
                    )
                self.marked[tid] = BlobKind.TREE
                for e in entries:
                    if e.type is EntryType.FILE:
                        for chunk in e.chunks:
                            self.marked.setdefault(chunk, BlobKind.DATA)
                    elif e.subtree is not None and e.subtree not in self._trees_done:
                        below.add(e.subtree)
            level = sorted(below)


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class MaxUnused:
    """--max-unused: a share of the total after pruning (restic's meaning), or bytes."""

    fraction: float | None = 0.05
    limit: int | None = None

    def allowed(self, live_bytes: int) -> int:
        """How many unused bytes may stay next to `live_bytes` of live data."""
        if self.limit is not None:
            return self.limit
        assert self.fraction is not None
        if self.fraction >= 1:
            return 2**63  # unlimited
        # unused / (live + unused) <= fraction
        return int(self.fraction / (1 - self.fraction) * live_bytes)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_max_unused(text: str) -> MaxUnused:
    """'5%', '0%', '100M', '2G', 'unlimited'."""
    t = text.strip().upper()
    if t == "UNLIMITED":
        return MaxUnused(fraction=1.0)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%|[KMGT]?)(?:I?B)?", t)
    if m is None:
        raise UsageError(f"--max-unused takes a share like 5% or a size like 500M, not {text!r}")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        if number > 100:
            raise UsageError(f"--max-unused: {text!r} is more than 100%")
        return MaxUnused(fraction=number / 100)
    return MaxUnused(fraction=None, limit=int(number * _UNITS[unit]))


@dataclass
class Inventory:
    """The live packs and where each blob has a copy; kept current as packs are
    condemned and uploaded during the run."""

    packs: dict[PackId, ListedPack] = field(default_factory=dict)
    copies: dict[BlobId, dict[PackId, BlobLocation]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    @classmethod
    def of(cls, packs: Iterable[ListedPack]) -> Inventory:
        inv = cls()
        for p in packs:
            inv.add(p)
        return inv

    def add(self, pack: ListedPack) -> None:
        self.packs[pack.pack_id] = pack
        for e in pack.entries:
            self.copies[e.blob_id][pack.pack_id] = e

    def remove(self, pack_ids: Iterable[PackId]) -> None:
        for pid in pack_ids:
            pack = self.packs.pop(pid, None)
            for e in pack.entries if pack is not None else ():
                self.copies[e.blob_id].pop(pid, None)

    def condemnable(
        self, candidates: Iterable[PackId], marked: Mapping[BlobId, object]
    ) -> list[PackId]:
        """The candidates that may go together: every marked blob in them keeps a copy in
        a live pack outside them. Leaving a pack out only adds copies outside, so the
        loop ends with the largest such set."""
        batch = {p for p in candidates if p in self.packs}
        while True:
            stay = {
                p
                for p in batch
                if any(
                    e.blob_id in marked and not (self.copies[e.blob_id].keys() - batch)
                    for e in self.packs[p].entries
                )
            }
            if not stay:
                return sorted(batch, key=lambda p: p.raw)
            batch -= stay


@dataclass(frozen=True)
class Plan:
    dead: list[PackId]
    repack: list[PackId]  # emptiest first
    chosen: dict[BlobId, BlobLocation]  # the copy each marked blob keeps
    live_bytes: int  # of the chosen copies
    unused_bytes: int  # in packs that stay and are not repacked, after this plan
    dead_bytes: int
    repack_bytes: int  # size of the packs to repack
    young: int  # packs too young to be condemned: left alone
    missing: list[BlobId]  # marked, but in no live pack (damage: `anysync check`)


def plan(
    inv: Inventory,
    marked: Mapping[BlobId, object],
    max_unused: MaxUnused,
    *,
    now: int,
    min_pack_age: int,
) -> Plan:
    marked_bytes: dict[PackId, int] = defaultdict(int)
    for pid, pack in inv.packs.items():
        marked_bytes[pid] = sum(e.length for e in pack.entries if e.blob_id in marked)
    chosen: dict[BlobId, BlobLocation] = {}
    missing: list[BlobId] = []
    for bid in marked:
        copies = inv.copies.get(bid)
        if not copies:
            missing.append(bid)
            continue
        # The fullest pack keeps it, so that as few packs as possible stay partly used.
        best = min(copies, key=lambda p: (-marked_bytes[p], p.raw))
        chosen[bid] = copies[best]
    live: dict[PackId, int] = defaultdict(int)
    for loc in chosen.values():
        live[loc.pack_id] += loc.length

    young = {p for p, pack in inv.packs.items() if pack.created_at + min_pack_age > now}
    dead = sorted((p for p in inv.packs if live[p] == 0 and p not in young), key=lambda p: p.raw)
    staying = [p for p in inv.packs if p not in dead]

    def unused(p: PackId) -> int:
        # Header and trailer count as used: every pack has them, repacking keeps them.
        return sum(e.length for e in inv.packs[p].entries) - live[p]

    total_unused = sum(unused(p) for p in staying)
    allowed = max_unused.allowed(sum(live.values()))
    candidates = sorted(
        (p for p in staying if p not in young and unused(p) > 0),
        key=lambda p: (live[p] / max(inv.packs[p].size, 1), p.raw),
    )
    repack: list[PackId] = []
    for p in candidates:
        if total_unused <= allowed:
            break
        repack.append(p)
        total_unused -= unused(p)
    return Plan(
        dead=dead,
        repack=repack,
        chosen=chosen,
        live_bytes=sum(live.values()),
        unused_bytes=total_unused,
        dead_bytes=sum(inv.packs[p].size for p in dead),
        repack_bytes=sum(inv.packs[p].size for p in repack),
        young=len(young),
        missing=missing,
    )


def batches(repack: Sequence[PackId], inv: Inventory, batch_bytes: int) -> list[list[PackId]]:
    """The packs to repack in groups of about `batch_bytes` of pack size each."""
    out: list[list[PackId]] = []
    size = 0
    for p in repack:
        if not out or size >= batch_bytes:
            out.append([])
            size = 0
        out[-1].append(p)
        size += inv.packs[p].size
    return out
