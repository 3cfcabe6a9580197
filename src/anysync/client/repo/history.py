"""Snapshots: listing and resolving them, on top of the checked refs of refs.py.

Listing and resolving need the heads only; older commits are loaded one at a time and
an unreadable one (its pack lost or damaged on the server) ends that ref's history with
a warning instead of failing the command: the newer snapshots need nothing from it.

Edit commits (docs/prune-design.md §5) forget or replace earlier snapshots of their ref
without rewriting anything. A view of a ref applies them, but only the edits that
*count*: those the server recorded in ref_history as written by a device with the
manage right. Which ones count is asked of the server by the caller and passed in as a
set of commit IDs, so that this module stays free of RPCs. An edit that does not count
(an append-only or stolen-token device's "forget everything") is shown and ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass, field

from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import CAS_ATTEMPTS as CAS_ATTEMPTS
from anysync.client.repo.refs import CommitStore, RefBook, label_of
from anysync.client.repo.refs import Snapshot as Snapshot
from anysync.errors import IntegrityError, NotFound, RollbackError, UsageError
from anysync.types import BlobId

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


def advance(book: RefBook, ref: str, make: Callable[[Snapshot | None], Commit]) -> Snapshot:
    """Store make(head) as the ref's new head by compare-and-swap, retrying on races."""
    made = book.advance(ref, make).committed
    assert made is not None  # make never declines
    return made


def chain(commits: CommitStore, head: Snapshot) -> Iterator[Snapshot]:
    """The head and its first-parent ancestors, newest first, loaded as they are asked for."""
    node = head
    yield node
    while node.commit.parents:
        parent = node.commit.parents[0]
        node = Snapshot(parent, commits.load_commit(parent))
        yield node


def history(commits: CommitStore, head: Snapshot) -> list[Snapshot]:
    """The whole chain; fails if any ancestor cannot be read."""
    return list(chain(commits, head))


def readable_chain(commits: CommitStore, head: Snapshot, warn: Warn) -> list[Snapshot]:
    """The chain down to the first commit that cannot be read, which is warned about."""
    out: list[Snapshot] = []
    try:
        for snap in chain(commits, head):
            out.append(snap)
    except RollbackError:
        raise
    except (NotFound, IntegrityError) as exc:
        warn(
            f"older snapshots of {label_of(head.commit)} cannot be read (the parent of "
            f"snapshot {out[-1].id.short()}: {exc.message}); listing the newer ones"
        )
    return out


# ---------------------------------------------------------------- views with edits


@dataclass(frozen=True, slots=True)
class Forgotten:
    snapshot: Snapshot  # what was forgotten (as it was shown: through a replacement)
    by: Snapshot  # the counting edit commit that forgot it first

    def message(self, what: str = "snapshot") -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.by.commit.time_ns / 1e9))
        return (
            f"{what} {self.snapshot.id.short()} was forgotten on {when} by {self.by.commit.device}"
        )


@dataclass
class RefView:
    """One ref as its counting edits leave it."""

    ref: str
    kind: str  # of its snapshots: "backup" or "sync" ("edit" if no snapshot could be read)
    head: Snapshot
    snapshots: list[Snapshot] = field(default_factory=list)  # kept, newest first
    forgotten: dict[BlobId, Forgotten] = field(default_factory=dict)  # by every ID it had
    replaced: dict[BlobId, Snapshot] = field(default_factory=dict)  # original ID -> shown
    ignored: list[Snapshot] = field(default_factory=list)  # edits that do not count
    retired: bool = False  # a backup source whose every snapshot is forgotten
    retention: str = ""  # the sync policy set by the newest counting edit ("": default)

    @property
    def latest(self) -> Snapshot | None:
        return self.snapshots[0] if self.snapshots else None

    @property
    def label(self) -> str:
        """How a person knows the ref: by its newest snapshot, kept or not."""
        shown = [*self.snapshots, *(f.snapshot for f in self.forgotten.values()), self.head]
        return label_of(shown[0].commit)


def ignored_message(edit: Snapshot) -> str:
    c = edit.commit
    what = "forget record" if _forgets(c) or not c.retention else "retention setting"
    d = c.device
    return f"{what} by device {d} ignored: {d} had no manage right"


def _forgets(c: Commit) -> bool:
    return c.edit is not None and bool(c.edit.forget or c.edit.replace or c.edit.retired)


def view_of(commits: CommitStore, head: Snapshot, counting: Set[BlobId], warn: Warn) -> RefView:
    """The ref of `head` with its counting edits applied; `counting` holds the IDs of
    the edit commits ref_history records as written with the manage right."""
    walked = readable_chain(commits, head, warn)
    out = RefView(head.commit.ref, _kind(walked), head)
    forgets: dict[BlobId, Snapshot] = {}  # forgotten ID -> the oldest edit naming it
    replace: dict[BlobId, BlobId] = {}  # original -> replacement, the newest edit wins
    newer_snapshot = False  # walking newest first: has a snapshot come after this edit?
    decided_retired = False
    for snap in walked:
        c = snap.commit
        if c.kind != "edit":
            newer_snapshot = True
            continue
        if snap.id not in counting:
            out.ignored.append(snap)
            warn(ignored_message(snap))
            continue
        if c.retention and not out.retention:
            out.retention = c.retention
        if c.edit is None:
            continue
        if not decided_retired:
            out.retired = c.edit.retired and not newer_snapshot
            decided_retired = True
        for f in c.edit.forget:
            forgets[f] = snap  # oldest last, so the oldest edit wins
        for of, by in c.edit.replace:
            replace.setdefault(of, by)
    for snap in walked:
        if snap.commit.kind == "edit":
            continue
        shown = _replacement(commits, snap, replace.get(snap.id), warn)
        if shown is not snap:
            out.replaced[snap.id] = shown
        edit = forgets.get(snap.id) or forgets.get(shown.id)
        if edit is None:
            out.snapshots.append(shown)
        else:
            out.forgotten[shown.id] = out.forgotten[snap.id] = Forgotten(shown, edit)
    return out


def _kind(walked: list[Snapshot]) -> str:
    return next((s.commit.kind for s in walked if s.commit.kind != "edit"), "edit")


def _replacement(commits: CommitStore, snap: Snapshot, by: BlobId | None, warn: Warn) -> Snapshot:
    if by is None:
        return snap
    try:
        c = commits.load_commit(by)
    except (NotFound, IntegrityError) as exc:
        warn(
            f"the repaired copy {by.short()} of snapshot {snap.id.short()} cannot be read "
            f"({exc.message}); showing the original"
        )
        return snap
    if c.ref != snap.commit.ref or c.kind != snap.commit.kind:
        warn(f"the repaired copy {by.short()} of snapshot {snap.id.short()} is not of its ref")
        return snap
    return Snapshot(by, c)


def views(book: RefBook, counting: Set[BlobId], warn: Warn = log.warning) -> list[RefView]:
    """Every listed ref, rollback-checked, with its counting edits applied."""
    listing = book.listing()
    _first_contact(listing.first_contact, warn)
    return [view_of(book.commits, head, counting, warn) for head in listing.heads.values()]


def _first_contact(n: int | None, warn: Warn) -> None:
    if n:
        warn(
            f"first contact with this account on this device: trusting the server's {n} "
            "refs as they are (from now on this device notices if one goes back or vanishes)"
        )


def snapshots(
    book: RefBook,
    kind: str = "backup",
    warn: Warn = log.warning,
    *,
    counting: Set[BlobId] = frozenset(),
) -> list[Snapshot]:
    """Every readable, not forgotten snapshot of every ref of this kind, oldest first."""
    out = [s for v in views(book, counting, warn) if v.kind == kind for s in v.snapshots]
    return sorted(out, key=_age)


def _age(s: Snapshot) -> tuple[int, bytes]:
    """Oldest first; equal times by ID, so that the order is the same on every device."""
    return (s.commit.time_ns, s.id.raw)


NO_SNAPSHOTS = "there are no snapshots yet; run `anysync backup PATH` first"


# Which snapshots a command means (`--path`, `--device`, `--tag`): None, every one.
Match = Callable[[Commit], bool] | None


def resolve(
    book: RefBook,
    spec: str,
    warn: Warn = log.warning,
    *,
    counting: Set[BlobId] = frozenset(),
    match: Match = None,
) -> Snapshot:
    """'latest' (the newest snapshot not forgotten, of those `match` takes), a full
    commit ID or a unique prefix of one (at least 4 hex digits; `match` does not apply
    to an ID given). A forgotten one is refused, saying when and by whom."""
    if spec == "latest":
        return _latest(book, counting, warn, match)
    spec = spec.lower()
    if len(spec) < 4:
        raise UsageError("give at least 4 hex digits of a snapshot ID, or 'latest'")
    backups = [v for v in views(book, counting, warn) if v.kind == "backup"]
    if not any(v.snapshots or v.forgotten for v in backups):
        raise NotFound(NO_SNAPSHOTS)
    kept: dict[BlobId, Snapshot] = {}
    gone: dict[BlobId, Forgotten] = {}
    for v in backups:
        for s in v.snapshots:
            kept[s.id] = s
        for of, shown in v.replaced.items():  # the original ID names its replacement
            if shown.id in kept:
                kept[of] = shown
        gone.update(v.forgotten)
    matches = {s.id: s for bid, s in kept.items() if bid.hex().startswith(spec)}
    lost = {f.snapshot.id: f for bid, f in gone.items() if bid.hex().startswith(spec)}
    if len(matches) + len(lost) > 1:
        raise UsageError(f"{spec!r} matches {len(matches) + len(lost)} snapshots; give more digits")
    if lost:
        raise NotFound(next(iter(lost.values())).message())
    if not matches:
        raise NotFound(f"no snapshot matches {spec!r}; see `anysync snapshots`")
    return next(iter(matches.values()))


def _latest(book: RefBook, counting: Set[BlobId], warn: Warn, match: Match) -> Snapshot:
    if match is not None:  # a tag may sit on an older snapshot than the head: all count
        chosen = [sn for sn in snapshots(book, warn=warn, counting=counting) if match(sn.commit)]
        if not chosen:
            raise NotFound("no snapshot matches --path/--device/--tag; see `anysync snapshots`")
        return max(chosen, key=_age)
    listing = book.listing()
    _first_contact(listing.first_contact, warn)
    found: list[Snapshot] = []
    for head in listing.heads.values():
        if head.commit.kind == "backup":
            found.append(head)  # no edit above it: nothing forgot or replaced it
        elif head.commit.kind == "edit":
            v = view_of(book.commits, head, counting, warn)
            if v.kind == "backup" and v.latest is not None:
                found.append(v.latest)
    if not found:
        raise NotFound(NO_SNAPSHOTS)
    newest = max(found, key=_age)
    sources = {f.commit.ref for f in found}  # one backup ref per (host, set of paths)
    if len(sources) > 1:
        # `ls latest` after backing up one file elsewhere shows that file alone: say so.
        warn(
            f"'latest' is the newest of {len(sources)} backup sources: "
            f"{', '.join(newest.commit.paths)} on {newest.commit.device}; "
            "pick one with --path (see `anysync snapshots`)"
        )
    return newest
