"""`anysync repair index` and `anysync repair snapshots` (docs/prune-design.md §8).

repair index: every live pack carries its own table of contents, sealed in its header.
Each pack's trailer and header are read (two small reads), the header is authenticated,
and where the server's index rows of the pack differ from it, RepairIndex makes them
equal. A pack whose header cannot be read is counted and left alone: only the header
is trusted, never the server's rows.

repair snapshots: a snapshot that names lost data (check.py's damage) is rebuilt
bottom-up without the lost files and without the directories that cannot be read, and
stored as a parentless commit with the original's kind, counter and time. One edit
commit per ref then replaces the original by it (and forgets it with --forget); the
history views show the original through its replacement. First, packs whose object is
gone are condemned (`drop_lost_packs`): their blobs then count as missing everywhere,
so a backup or sync pass of a device that still has the files uploads them again. A
sync folder's current state is never rewritten without its lost files: every device
would then delete its own, intact copies. It is left as it is and named; a sync pass
on a device that still has the files heals it.

Deciding is apart from doing: `index_diff` and `rebuild` are pure; the rest talks to
the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from anysync.client import check as checking
from anysync.client.forget import CountingEdits, RefHistory, Writer
from anysync.client.repo import history
from anysync.client.repo import pack as pack_layout
from anysync.client.repo.commit import Commit, Edit
from anysync.client.repo.history import RefView, Snapshot, Warn
from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import (
    CondemnResult,
    PackInfo,
    PackListing,
    RepairResult,
    Repository,
)
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import AnySyncError, Conflict, GcRaced, NotFound
from anysync.types import BlobId, PackId

ATTEMPTS = 4  # runs restarted because a prune or another repair raced this one


# ================================================================ repair index


class IndexServer(Protocol):
    """The calls `repair index` makes (anysync.client.remote.Remote implements them)."""

    def list_packs(self, include_entries: bool, include_condemned: bool = False) -> PackListing: ...

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes: ...

    def repair_index(
        self, pack_id: PackId, entries: Sequence[PackedBlob], expected_generation: int
    ) -> RepairResult: ...


class Keys(Protocol):
    @property
    def data_key(self) -> bytes: ...

    @property
    def id_key(self) -> bytes: ...


@dataclass(frozen=True)
class PackFix:
    pack_id: PackId
    added: int  # index rows the header has and the server lacked
    removed: int  # index rows the server had and the header does not


@dataclass
class IndexReport:
    dry_run: bool
    packs: int = 0  # live packs looked at
    fixed: list[PackFix] = field(default_factory=list)
    unreadable: int = 0  # packs whose header cannot be read: left alone

    @property
    def added(self) -> int:
        return sum(f.added for f in self.fixed)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.fixed)


Row = tuple[bytes, int, int]  # (blob ID, offset, length)


def index_diff(server_rows: Sequence[Row], header: Sequence[PackedBlob]) -> tuple[int, int]:
    """(rows to add, rows to remove) to make a pack's index its header, one row per
    blob ID with the first listing winning, as the server's RepairIndex does."""
    wanted: dict[bytes, tuple[int, int]] = {}
    for b in header:
        wanted.setdefault(b.blob_id.raw, (b.offset, b.length))
    have = {raw: (offset, length) for raw, offset, length in server_rows}
    added = sum(1 for raw, where in wanted.items() if have.get(raw) != where)
    removed = sum(1 for raw, where in have.items() if wanted.get(raw) != where)
    return added, removed


def read_pack_header(server: IndexServer, keys: Keys, p: PackInfo) -> list[PackedBlob]:
    """A pack's authenticated table of contents, from its trailer and its header."""
    size = pack_layout.TRAILER.size
    trailer = server.read_pack(p.pack_id, p.size - size, size) if p.size >= size else b""
    header_id, start, length = pack_layout.header_span(p.size, trailer)
    sealed = server.read_pack(p.pack_id, start, length)
    return pack_layout.open_header(keys.data_key, keys.id_key, header_id, sealed, start)


def repair_index(
    server: IndexServer, keys: Keys, *, dry_run: bool = False, say: Callable[[str], None]
) -> IndexReport:
    """Make every live pack's index rows what its header lists. A prune or another
    repair that moves the gc_generation meanwhile restarts the run: what was fixed
    stays fixed, and the new listing shows it."""
    report = IndexReport(dry_run)
    for _ in range(ATTEMPTS):
        try:
            _repair_index_once(server, keys, report, say)
            return report
        except GcRaced:
            say("packs were condemned or repaired meanwhile; listing them again")
    raise Conflict("the account's packs kept changing during the repair; try again")


def _repair_index_once(
    server: IndexServer, keys: Keys, report: IndexReport, say: Callable[[str], None]
) -> None:
    listing = server.list_packs(include_entries=True)
    generation = listing.gc_generation
    report.packs, report.unreadable = len(listing.packs), 0
    say(f"reading the headers of {len(listing.packs)} packs")
    for p in listing.packs:
        try:
            header = read_pack_header(server, keys, p)
        except AnySyncError:  # missing, short or not authentic: nothing to trust
            report.unreadable += 1
            continue
        rows = [(e.blob_id.raw, e.offset, e.length) for e in p.entries]
        added, removed = index_diff(rows, header)
        if not (added or removed):
            continue
        if not report.dry_run:
            done = server.repair_index(p.pack_id, header, generation)
            generation = done.gc_generation
            added, removed = done.added, done.removed
        report.fixed.append(PackFix(p.pack_id, added, removed))


# ================================================================ lost packs


class LostPackServer(Protocol):
    """The calls `drop_lost_packs` makes (anysync.client.remote.Remote implements them)."""

    def list_packs(self, include_entries: bool, include_condemned: bool = False) -> PackListing: ...

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes: ...

    def condemn_packs(
        self, pack_ids: Sequence[PackId], expected_generation: int, expected_ref_seq: int
    ) -> CondemnResult: ...


def lost_packs(server: LostPackServer, listing: PackListing) -> list[PackId]:
    """Packs the server records whose object is gone (a read of their first byte gives
    NotFound). A short or damaged pack is not lost: what it still holds may be read."""
    lost = []
    for p in listing.packs:
        try:
            server.read_pack(p.pack_id, 0, 1)
        except NotFound:
            lost.append(p.pack_id)
    return lost


def drop_lost_packs(server: LostPackServer, repo: Repository, *, dry_run: bool = False) -> int:
    """Condemn the packs whose object is gone, so that their blobs count as missing
    everywhere: the next backup or sync pass of a device that still has the files finds
    their chunks missing (the fence's `missing()` check, design.md §14.6) and uploads them
    again, which heals every snapshot and sync state that names them. Nothing readable is
    lost by it. Fenced like a prune; the number of packs (that would be) dropped."""
    for _ in range(ATTEMPTS):
        listing = server.list_packs(include_entries=False)
        lost = lost_packs(server, listing)
        if not lost or dry_run:
            return len(lost)
        try:
            server.condemn_packs(lost, listing.gc_generation, listing.ref_seq)
        except Conflict:  # a ref moved or a prune ran meanwhile: look again
            continue
        for pack_id in lost:
            repo.forget_pack(pack_id)
        return len(lost)
    raise Conflict("the account kept changing during the repair; try again")


# ================================================================ repair snapshots


@dataclass(frozen=True)
class Repaired:
    original: Snapshot  # as it was shown (itself, or an earlier repair of it)
    replacement: Snapshot | None  # None in a dry run
    lost: list[str]  # paths (and unreadable directories) left out


@dataclass
class RefRepair:
    ref: str
    label: str
    snapshots: list[Repaired] = field(default_factory=list)
    state: Repaired | None = None  # a sync folder's damaged state: named, left as it is
    edit: Snapshot | None = None  # the edit commit that records the replacements


@dataclass
class SnapshotReport:
    dry_run: bool
    forget: bool
    refs: list[RefRepair] = field(default_factory=list)


@dataclass
class _Damage:
    """Where the account's lost data is: the trees, the bad chunks, the paths."""

    trees: checking.Trees
    bad: dict[BlobId, str]
    memo: dict[BlobId, list[tuple[str, str]]] = field(default_factory=dict)

    def under(self, tree: BlobId) -> list[tuple[str, str]]:
        return checking.damage_under(tree, self.trees, self.bad, self.memo)


def find_damage(repo: Repository, vs: Sequence[RefView]) -> _Damage:
    """check.py's damage map for every shown snapshot and every ref's state."""
    roots = [s.commit.tree for v in vs for s in (v.head, *v.snapshots)]
    trees = checking.load_trees(repo, roots)
    chunks = {c for es in trees.values() if isinstance(es, list) for c in checking.file_chunks(es)}
    return _Damage(trees, checking.unusable_chunks(repo, chunks, checking.CheckResult()))


def rebuild(
    tid: BlobId,
    damage: _Damage,
    save: Callable[[list[TreeEntry]], BlobId],
    done: dict[BlobId, BlobId],
) -> BlobId | None:
    """The tree without its damaged files, rebuilt bottom-up; None if it cannot be read.
    An undamaged subtree keeps its ID (and is not saved again)."""
    if not damage.under(tid):
        return tid
    if tid in done:
        return done[tid]
    entries = damage.trees.get(tid)
    if not isinstance(entries, list):
        return None
    kept: list[TreeEntry] = []
    for e in entries:
        if e.type is EntryType.FILE and any(c in damage.bad for c in e.chunks):
            continue
        if e.subtree is not None:
            sub = rebuild(e.subtree, damage, save, done)
            if sub is None:
                continue
            if sub != e.subtree:
                e = TreeEntry(e.name, e.type, e.mode, e.mtime_ns, e.size, e.chunks, sub, e.target)
        kept.append(e)
    done[tid] = save(kept)
    return done[tid]


def repair_snapshots(
    repo: Repository,
    book: RefBook,
    src: RefHistory,
    writer: Writer,
    warn: Warn,
    *,
    forget: bool = False,
    dry_run: bool = False,
    now_ns: Callable[[], int] = time.time_ns,
) -> SnapshotReport:
    """Replace every damaged snapshot by a repaired copy (see the module's docstring).
    A prune that condemns packs meanwhile (GcRaced) makes the repaired trees suspect:
    the session is revalidated and the run starts again; what is done stays done."""
    report = SnapshotReport(dry_run, forget)
    for _ in range(ATTEMPTS):
        try:
            _repair_snapshots_once(repo, book, src, writer, warn, report, now_ns)
            return report
        except GcRaced:
            repo.revalidate()
    raise Conflict("packs kept being pruned during the repair; try again")


def _repair_snapshots_once(
    repo: Repository,
    book: RefBook,
    src: RefHistory,
    writer: Writer,
    warn: Warn,
    report: SnapshotReport,
    now_ns: Callable[[], int],
) -> None:
    vs = history.views(book, CountingEdits(src), warn)
    damage = find_damage(repo, vs)
    for v in vs:
        damaged = [s for s in v.snapshots if damage.under(s.commit.tree)]
        state_lost = v.kind == "sync" and bool(damage.under(v.head.commit.tree))
        if not damaged and not state_lost:
            continue
        out = RefRepair(v.ref, v.label)
        if report.dry_run:
            out.snapshots = [
                Repaired(s, None, _paths(damage.under(s.commit.tree))) for s in damaged
            ]
            if state_lost:
                out.state = Repaired(v.head, None, _paths(damage.under(v.head.commit.tree)))
            report.refs.append(out)
            continue
        done: dict[BlobId, BlobId] = {}
        if state_lost:
            out.state = Repaired(v.head, None, _paths(damage.under(v.head.commit.tree)))
            n = len(out.state.lost)
            warn(
                f"{v.label}: {n} file(s) of the current state are lost on the server; left "
                "as they are, so that no device deletes its copy: run `anysync sync run` on "
                "a device that still has them, which uploads them again"
            )
        originals = {shown.id: of for of, shown in v.replaced.items()}
        for s in damaged:
            lost = damage.under(s.commit.tree)
            tree = rebuild(s.commit.tree, damage, repo.save_tree, done) or repo.save_tree([])
            copy = _replacement(s.commit, tree, len(lost))
            out.snapshots.append(Repaired(s, Snapshot(repo.save_commit(copy), copy), _paths(lost)))
        if out.snapshots:
            pairs = [(originals.get(r.original.id, r.original.id), r) for r in out.snapshots]
            out.edit = _record(repo, book, src, v.ref, pairs, report.forget, writer, now_ns)
        report.refs.append(out)  # only once done: a restarted run must not list it twice


def _paths(lost: list[tuple[str, str]]) -> list[str]:
    return [path or "(the whole snapshot)" for path, _ in lost]


def _replacement(original: Commit, tree: BlobId, lost: int) -> Commit:
    """The repaired copy: parentless, with the original's kind, counter and time (so it
    lists where the original did) and its origin, so that it names the same ref."""
    return Commit(
        kind=original.kind,
        tree=tree,
        parents=(),
        ref=original.ref,
        counter=original.counter,
        time_ns=original.time_ns,
        device_id=original.device_id,
        device=original.device,
        hostname=original.hostname,
        paths=original.paths,
        message=f"repaired: {lost} files lost",
        stats=original.stats,
        retention=original.retention,
        tags=original.tags,  # `--tag` still finds it
    )


def _record(
    repo: Repository,
    book: RefBook,
    src: RefHistory,
    ref: str,
    pairs: list[tuple[BlobId, Repaired]],
    forget: bool,
    writer: Writer,
    now_ns: Callable[[], int],
) -> Snapshot:
    """The edit commit replacing (and with `forget` forgetting) each original, on top of
    the ref's head; a lost race builds it again on the new head."""
    replace = tuple((of, r.replacement.id) for of, r in pairs if r.replacement is not None)
    gone = {of for of, _ in pairs} if forget else set()
    shown_as = {r.original.id: r.replacement for _, r in pairs if r.replacement is not None}

    def make(head: Snapshot | None) -> Commit:
        assert head is not None
        v = history.view_of(repo, head, CountingEdits(src, ref), lambda _: None)
        originals = {shown.id: of for of, shown in v.replaced.items()}
        kept = [shown_as.get(s.id, s) for s in v.snapshots if originals.get(s.id, s.id) not in gone]
        retired = v.kind == "backup" and not kept
        if v.kind == "sync":
            tree = head.commit.tree
        else:
            tree = kept[0].commit.tree if kept else repo.save_tree([])
        model = (v.snapshots or [head])[0].commit
        return Commit(
            kind="edit",
            tree=tree,
            parents=(head.id,),
            ref=ref,
            counter=head.commit.counter + 1,
            time_ns=now_ns(),
            device_id=writer.device_id,
            device=writer.device,
            hostname=model.hostname,
            paths=model.paths,
            message=f"repair {len(replace)} snapshot(s)",
            edit=Edit(tuple(sorted(gone, key=lambda b: b.raw)), replace, retired),
            retention=v.retention,
        )

    return history.advance(book, ref, make)
