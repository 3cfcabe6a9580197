"""`anysync forget`: take snapshots out of the listing by appending edit commits.

Nothing is rewritten (docs/prune-design.md §5): one edit commit per ref lists the
snapshots it forgets, on top of the ref's head (`parents [head]`, counter + 1), so
snapshot IDs, the rollback floor and sync's journal stay as they are. Its tree is the
ref's state: a sync folder's head state, a backup source's newest kept snapshot, or the
empty tree with `retired` when none is left. The data stays on the server until a prune
finds it unreachable.

Deciding is apart from doing: `decide_*` turn a RefView into a Plan (pure), `apply`
writes the Plan's edit through `RefBook.advance`. A lost compare-and-swap calls the
decision again on the new head, so a snapshot that just landed is taken into account.

An edit counts only if ref_history says a manage device wrote it (history.py), so
forget needs the manage right (or a fresh elevation); `require_manage` says so before
anything is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass
from datetime import tzinfo
from functools import partial
from typing import Protocol

from anysync.client.repo import history, retention
from anysync.client.repo.commit import Commit, Edit
from anysync.client.repo.history import RefView, Snapshot, Warn
from anysync.client.repo.refs import RefBook
from anysync.client.repo.repository import Repository
from anysync.errors import AppendOnly, IntegrityError, NeedsManage, NotFound, UsageError
from anysync.types import BlobId


@dataclass(frozen=True, slots=True)
class Writer:
    """The device that writes the edit commits."""

    device_id: int
    device: str
    hostname: str


class HistoryRow(Protocol):
    @property
    def commit_id(self) -> BlobId: ...

    @property
    def by_manage(self) -> bool: ...


class RefHistory(Protocol):
    """The server's ref_history (anysync.client.remote.Remote implements it)."""

    def list_ref_history(
        self, name: str = "", after_seq: int = 0
    ) -> tuple[Sequence[HistoryRow], int]: ...


def counting_edits(src: RefHistory, name: str = "") -> frozenset[BlobId]:
    """The commits of ref `name` (every ref when empty) that a device with the manage
    right put at the head: the edits among them count (history.view_of)."""
    rows, _ = src.list_ref_history(name)
    return frozenset(r.commit_id for r in rows if r.by_manage)


class CountingEdits(Set[BlobId]):
    """counting_edits(src) as a set, asked of the server when first needed: most
    listings meet no edit commit, and a busy account's ref_history is long."""

    def __init__(self, src: RefHistory, name: str = "") -> None:
        self._src, self._name = src, name
        self._ids: frozenset[BlobId] | None = None

    def _get(self) -> frozenset[BlobId]:
        if self._ids is None:
            self._ids = counting_edits(self._src, self._name)
        return self._ids

    def __contains__(self, x: object) -> bool:
        return x in self._get()

    def __iter__(self) -> Iterator[BlobId]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def has_manage(rights: str, elevated_until: int, now_s: float) -> bool:
    return rights == "manage" or elevated_until > now_s


def require_manage(what: str, rights: str, elevated_until: int, now_s: float) -> None:
    """Refuse (exit 5) before writing an edit that would not count."""
    if rights == "append":
        raise AppendOnly(
            f"this device is append-only: it may add data, never delete it; run {what} on a "
            "device with the manage right"
        )
    if not has_manage(rights, elevated_until, now_s):
        raise NeedsManage(
            f"{what} needs the manage right and this device has {rights or 'no'} rights: run "
            "it on a manage device, give this one the right from there (`anysync devices "
            "add-rights`), or elevate it with the account password"
        )


# ---------------------------------------------------------------- deciding

GROUP_BY_SOURCE = "host,paths"


@dataclass(frozen=True)
class Plan:
    """What forget does to one ref: the snapshots it keeps (newest first, with the rules
    that keep them) and those it forgets (newest first)."""

    view: RefView
    keep: tuple[tuple[Snapshot, tuple[str, ...]], ...]
    forget: tuple[Snapshot, ...]
    policy: str  # what decided, for the record and the output

    @property
    def ref(self) -> str:
        return self.view.ref


def decide_policy(
    view: RefView, policy: retention.Policy, *, now_ns: int | None = None, tz: tzinfo | None = None
) -> Plan:
    """restic's rules applied to one ref's snapshots (one backup source is one group)."""
    return _decide(view, policy, str(policy), protect=None, now_ns=now_ns, tz=tz)


def decide_grouped(
    view: RefView,
    policy: retention.Policy,
    group_by: str,
    others: Sequence[RefView],
    *,
    now_ns: int | None = None,
    tz: tzinfo | None = None,
) -> Plan:
    """restic's rules over groups that span backup sources (`--group-by host` puts every
    source of a host in one group); only `view`'s share of the decision is returned,
    since each ref gets its own edit commit. `others` are the other selected sources."""
    members = [view, *(o for o in others if o.ref != view.ref)]
    by_id = {s.id.hex(): (v.ref, s) for v in members for s in v.snapshots}
    items = [
        retention.Item(h, s.commit.time_ns, s.commit.hostname, s.commit.paths)
        for h, (_, s) in by_id.items()
    ]
    d = retention.decide(items, policy, group_by=group_by, tz=tz, now_ns=now_ns)
    mine = {h: s for h, (ref, s) in by_id.items() if ref == view.ref}
    keep = [(mine[k.item.id], k.reasons) for k in d.keep if k.item.id in mine]
    forget = [mine[r.id] for r in d.remove if r.id in mine]
    return Plan(view, tuple(keep), tuple(forget), f"{policy} (grouped by {group_by or 'nothing'})")


def sync_policy(view: RefView) -> retention.Policy:
    """The retention a sync folder's counting edits set, or the default."""
    if not view.retention:
        return retention.SYNC_DEFAULT
    return retention.Policy.from_bytes(view.retention.encode())


def decide_sync(view: RefView, *, now_ns: int | None = None, tz: tzinfo | None = None) -> Plan:
    """The folder's own policy; its current state (the newest version) is always kept."""
    policy = sync_policy(view)
    return _decide(view, policy, f"sync folder: {policy}", view.latest, now_ns=now_ns, tz=tz)


def _decide(
    view: RefView,
    policy: retention.Policy,
    text: str,
    protect: Snapshot | None,
    *,
    now_ns: int | None,
    tz: tzinfo | None,
) -> Plan:
    by_id = {s.id.hex(): s for s in view.snapshots}
    items = [retention.Item(h, s.commit.time_ns) for h, s in by_id.items()]
    d = retention.decide(items, policy, group_by="", tz=tz, now_ns=now_ns)
    keep = [(by_id[k.item.id], k.reasons) for k in d.keep]
    forget = [by_id[r.id] for r in d.remove]
    if protect is not None and protect in forget:
        forget.remove(protect)
        keep.append((protect, ("current state",)))
        keep.sort(key=lambda k: (k[0].commit.time_ns, k[0].id.raw), reverse=True)
    return Plan(view, tuple(keep), tuple(forget), text)


def decide_named(view: RefView, ids: Set[BlobId]) -> Plan:
    """Forget the snapshots named by ID (as shown: a replaced one by its replacement's)."""
    forget = [s for s in view.snapshots if s.id in ids]
    keep = [(s, ("not named",)) for s in view.snapshots if s not in forget]
    return Plan(view, tuple(keep), tuple(forget), f"named: {len(forget)} snapshot(s)")


def edit_commit(
    plan: Plan, writer: Writer, *, empty_tree: Callable[[], BlobId], now_ns: int
) -> Commit:
    """The edit commit that records `plan` on top of its ref's head."""
    v = plan.view
    forget: list[BlobId] = []
    for s in plan.forget:
        forget.append(s.id)
        forget += [of for of, shown in v.replaced.items() if shown == s]  # both names
    kept = [s for s in v.snapshots if s not in plan.forget]
    retired = v.kind == "backup" and not kept
    # A sync folder's state does not change; a backup source shows its newest kept one.
    tree = v.head.commit.tree if v.kind == "sync" else kept[0].commit.tree if kept else None
    if tree is None:
        tree = empty_tree()
    return _edit(
        v, writer, tree, Edit(tuple(forget), (), retired, plan.policy), v.retention, now_ns
    )


def _edit(
    v: RefView, writer: Writer, tree: BlobId, edit: Edit, keep_retention: str, now_ns: int
) -> Commit:
    # paths and hostname are the ref's, so that the edit names it as its snapshots do.
    model = (v.snapshots or [f.snapshot for f in v.forgotten.values()] or [v.head])[0].commit
    n = len(edit.forget)
    return Commit(
        kind="edit",
        tree=tree,
        parents=(v.head.id,),
        ref=v.ref,
        counter=v.head.commit.counter + 1,
        time_ns=now_ns,
        device_id=writer.device_id,
        device=writer.device,
        hostname=model.hostname,
        paths=model.paths,
        message=f"forget {n} snapshot(s)" if n else "set retention",
        edit=edit,
        retention=keep_retention,
    )


# ---------------------------------------------------------------- doing


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    edit: Snapshot | None  # None: nothing to forget, or a dry run


Decide = Callable[[RefView], Plan]


def apply(
    repo: Repository,
    book: RefBook,
    src: RefHistory,
    ref: str,
    decide: Decide,
    writer: Writer,
    warn: Warn,
    *,
    what: str = "",
    now_ns: Callable[[], int] = time.time_ns,
) -> Outcome:
    """Write the edit `decide` makes of the ref's current view; a lost race decides again
    on the new head."""
    plans: list[Plan] = []

    def make(head: Snapshot | None) -> Commit | None:
        if head is None:
            return None
        plans.append(decide(history.view_of(repo, head, counting_edits(src, ref), warn)))
        if not plans[-1].forget:
            return None
        return edit_commit(
            plans[-1], writer, empty_tree=lambda: repo.save_tree([]), now_ns=now_ns()
        )

    made = book.advance(ref, make, what=what).committed
    if not plans:
        raise NotFound(f"ref {ref[:12]} is gone")
    return Outcome(plans[-1], made)


def apply_sync_retention(
    repo: Repository,
    book: RefBook,
    src: RefHistory,
    ref: str,
    writer: Writer,
    warn: Warn,
    *,
    dry_run: bool = False,
    now_ns: int | None = None,
    tz: tzinfo | None = None,
) -> Outcome:
    """Forget the versions of a sync folder that its retention drops (never its current
    state). Used by `anysync forget` and by prune."""

    def decide(v: RefView) -> Plan:
        return decide_sync(v, now_ns=now_ns, tz=tz)

    if dry_run:
        _, head = book.head(ref)
        if head is None:
            raise NotFound(f"ref {ref[:12]} does not exist")
        return Outcome(decide(history.view_of(repo, head, counting_edits(src, ref), warn)), None)
    return apply(repo, book, src, ref, decide, writer, warn)


def set_sync_retention(
    repo: Repository,
    book: RefBook,
    ref: str,
    policy: retention.Policy,
    writer: Writer,
    *,
    now_ns: Callable[[], int] = time.time_ns,
) -> Snapshot:
    """An edit commit that sets the folder's retention and forgets nothing."""
    if policy.is_empty():
        raise UsageError("give at least one --keep-* rule")
    text = policy.to_bytes().decode()

    def make(head: Snapshot | None) -> Commit:
        if head is None:
            raise NotFound("that sync folder has no versions yet; run `anysync sync run` first")
        v = history.view_of(repo, head, frozenset(), lambda _: None)  # only its identity
        return _edit(v, writer, head.commit.tree, Edit(policy=str(policy)), text, now_ns())

    return history.advance(book, ref, make)


# ---------------------------------------------------------------- the command


@dataclass(frozen=True)
class Request:
    """What `anysync forget` was asked: a policy, or snapshot IDs (never both)."""

    policy: retention.Policy | None = None
    ids: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # only backup sources holding one of these paths
    devices: tuple[str, ...] = ()  # only backup sources of these hosts or devices
    dry_run: bool = False
    group_by: str = GROUP_BY_SOURCE  # restic's --group-by; the default: one backup source

    def check(self) -> None:
        empty = self.policy is None or self.policy.is_empty()
        if self.ids and not empty:
            raise UsageError("give snapshot IDs or --keep-* rules, not both")
        if not self.ids and empty:
            raise UsageError(
                "forget needs snapshot IDs or at least one --keep-* rule (an empty policy "
                "would forget nothing; restic refuses it too)"
            )
        if self.ids and self.group_by != GROUP_BY_SOURCE:
            raise UsageError("--group-by groups snapshots for a policy; named IDs need none")
        if self.ids and (self.paths or self.devices):
            raise UsageError("--path and --device select by policy; named IDs need neither")


def run_forget(
    repo: Repository,
    book: RefBook,
    src: RefHistory,
    req: Request,
    writer: Writer,
    warn: Warn,
    *,
    now_ns: int | None = None,
    tz: tzinfo | None = None,
) -> list[Outcome]:
    """Apply `req` to every ref it selects: one edit commit per ref that loses anything."""
    req.check()
    vs = history.views(book, CountingEdits(src), warn)
    decisions: list[tuple[RefView, Decide]] = []
    if req.ids:
        for v, ids in _named(vs, req.ids, warn):
            decisions.append((v, partial(decide_named, ids=ids)))
    else:
        assert req.policy is not None
        restricted = bool(req.paths or req.devices)
        sources = [v for v in vs if v.kind == "backup" and v.snapshots and _selected(v, req)]
        for v in sources:
            if _group_by_source(req.group_by):
                decide = partial(decide_policy, policy=req.policy, now_ns=now_ns, tz=tz)
            else:
                decide = partial(
                    decide_grouped,
                    policy=req.policy,
                    group_by=req.group_by,
                    others=sources,
                    now_ns=now_ns,
                    tz=tz,
                )
            decisions.append((v, decide))
        for v in vs:  # sync folders: each by its own policy
            if v.kind == "sync" and v.snapshots and not restricted:
                try:
                    sync_policy(v)
                except IntegrityError as exc:
                    warn(f"{v.label}: {exc.message}; left alone")
                    continue
                decisions.append((v, partial(decide_sync, now_ns=now_ns, tz=tz)))
    if req.dry_run:
        return [Outcome(decide(v), None) for v, decide in decisions]
    return [
        apply(repo, book, src, v.ref, decide, writer, warn, what=v.label) for v, decide in decisions
    ]


def _group_by_source(text: str) -> bool:
    """Is this grouping one group per backup source? A source is one host's path set,
    so "host,paths" is; "host" (every source of a host together), "paths" and "" are
    not. Raises UsageError for an unknown word."""
    by_host, by_paths = retention.group_by_words(text)
    return by_host and by_paths


def _selected(v: RefView, req: Request) -> bool:
    model = (v.snapshots or [v.head])[0].commit
    if req.paths and not {os.path.abspath(p) for p in req.paths} & set(model.paths):
        return False
    return not req.devices or bool({model.hostname, model.device} & set(req.devices))


def _named(
    vs: Sequence[RefView], specs: Sequence[str], warn: Warn
) -> list[tuple[RefView, frozenset[BlobId]]]:
    """The snapshots `specs` name, by ref; refuses what cannot or should not be forgotten."""
    by_ref: dict[str, set[BlobId]] = {}
    for spec in specs:
        s = spec.lower()
        if len(s) < 4:
            raise UsageError(f"give at least 4 hex digits of a snapshot ID, not {spec!r}")
        kept = [(v, snap) for v in vs for snap in v.snapshots if snap.id.hex().startswith(s)]
        kept += [
            (v, shown)
            for v in vs
            for of, shown in v.replaced.items()
            if of.hex().startswith(s) and shown in v.snapshots
        ]
        gone = [f for v in vs for bid, f in v.forgotten.items() if bid.hex().startswith(s)]
        found = {snap.id: (v, snap) for v, snap in kept}
        if len(found) + len({f.snapshot.id for f in gone}) > 1:
            raise UsageError(f"{spec!r} matches several snapshots; give more digits")
        if gone:
            warn(gone[0].message() + "; nothing to do")
            continue
        if not found:
            raise NotFound(f"no snapshot matches {spec!r}; see `anysync snapshots`")
        ((v, snap),) = found.values()
        if v.kind == "sync" and snap == v.latest:
            raise UsageError(
                f"{snap.id.short()} is the current state of {v.label}; it cannot be forgotten"
            )
        by_ref.setdefault(v.ref, set()).add(snap.id)
    views_by_ref = {v.ref: v for v in vs}
    return [(views_by_ref[r], frozenset(ids)) for r, ids in sorted(by_ref.items())]
