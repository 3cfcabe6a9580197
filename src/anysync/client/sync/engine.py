"""One sync pass of one folder: scan → settle a killed pass's journal → merge with the
ref's head → commit by compare-and-swap → plan → execute (journaled) → records.

The commit goes to the server before anything is written locally, so a pass killed at
any point loses nothing: local changes are either in a commit or still on disk and
still differ from their records; remote changes are applied again by the next pass, and
the journal (sync/execute.py) makes what a killed pass did write count as agreed.
A remote head is accepted only after the rollback check, and every tree of it is
decoded (names checked) before the first local file is touched. The head may be a
forget's edit commit: its tree is the folder's state like any other head's.

A prune may delete blobs during a pass: the commit carries the generation the pass's
view of the server was read at, and a refusal (GcRaced) or a newer generation seen on
the way makes the pass check again what the server holds and scan again
(docs/prune-design.md §7). Nothing local was written before the commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from anysync import faults
from anysync.client import localfs
from anysync.client.chunker import Chunker
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.refs import RefBook, RefStore
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import flat
from anysync.client.sync.execute import Executor, settle
from anysync.client.sync.ignore import IGNORE_FILE, IgnoreRules
from anysync.client.sync.merge import merge
from anysync.client.sync.plan import plan
from anysync.client.sync.scan import Scan, scan
from anysync.client.sync.state import Folder, Record, SyncState, under
from anysync.errors import AnySyncError, GcRaced, NotFound
from anysync.types import BlobId

log = logging.getLogger(__name__)

# How many times a pass checks again what the server holds after a prune raced it.
REVALIDATIONS = 8


@dataclass(frozen=True)
class Device:
    id: int
    name: str
    hostname: str


@dataclass
class PassResult:
    committed: BlobId | None = None  # the new head, if this pass made one
    uploaded_files: int = 0
    downloaded: int = 0
    moved: int = 0
    deleted: int = 0  # here, because another device deleted them
    deletes_sent: int = 0  # deleted here, now deleted in the folder for every device
    conflicts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # changed meanwhile: next pass
    warnings: list[str] = field(default_factory=list)
    stuck: dict[str, str] = field(default_factory=dict)  # path → why it cannot be applied


def folder_ref(repo: Repository, name: str) -> str:
    return "s-" + repo.blob_id(b"sync\0" + name.encode()).hex()[:32]


def run_pass(
    repo: Repository,
    refs: RefStore,
    db: StateDB,
    folder: Folder,
    device: Device,
    changed: frozenset[bytes] | None = None,
) -> PassResult:
    """One pass. `changed`: the paths that may have changed on disk since the last pass
    of this Folder object (watch mode's inotify events); only they are read when that
    pass settled everything. None: every path is looked at."""
    if not folder.memo.settled:
        changed = None  # the paths taken from the watcher are the only trace of a change
    folder.memo.settled = False  # until this pass ends well
    if not folder.path.is_dir():
        raise NotFound(f"sync folder {folder.path} is missing; create it or remove it from sync")
    root_fd = localfs.open_root(folder.path)
    try:
        for attempt in range(REVALIDATIONS + 1):
            if attempt or repo.stale:  # refused, or a newer generation was seen
                lost = repo.revalidate()
                log.info("%d blob(s) were pruned meanwhile; scanning again", len(lost))
            try:
                book = RefBook(refs, repo, db)
                return _run_pass(repo, book, db, folder, device, root_fd, changed)
            except GcRaced:
                continue
        raise GcRaced(
            f"the account was pruned again and again during the sync of {folder.name}; try again"
        )
    finally:
        os.close(root_fd)


def _run_pass(
    repo: Repository,
    book: RefBook,
    db: StateDB,
    folder: Folder,
    device: Device,
    root_fd: int,
    changed: frozenset[bytes] | None,
) -> PassResult:
    state = SyncState(db)
    root = folder.path
    rules = IgnoreRules.load(root)
    excluded = state.excludes(folder.name)
    memo = folder.memo
    records = state.records(folder.name, memo.rows)
    if memo.rows is None:
        memo.rows = {}
    if memo.excluded != excluded or IGNORE_FILE.encode() in (changed or ()):
        changed = None  # other rules: what was not synced may be now
    memo.excluded = frozenset(excluded)
    chunker = Chunker(repo.keys.chunker_seed())
    disk = scan(root_fd, rules, excluded, records, repo, chunker, changed=changed)
    for temp in disk.temps:  # a killed write's; the pass lock says none is in progress
        with contextlib.suppress(OSError, AnySyncError):
            localfs.remove(root_fd, temp, localfs.current_at(root_fd, temp), is_dir=False)
    settle(state, folder.name, disk.entries, disk.stats, records, _landed(book, folder.ref))
    result = PassResult(warnings=list(disk.warnings))
    result.uploaded_files = disk.files_read

    def managed(path: bytes, entry: TreeEntry | None) -> bool:
        # What this pass could not read is unknown, not deleted: no opinion on it.
        if under(path, excluded) or under(path, disk.unreadable):
            return False
        return not rules.ignored(path, entry is not None and entry.type is EntryType.DIR)

    merged: flat.Flat = {}
    conflicts: list[tuple[bytes, bytes]] = []

    def make(head: history.Snapshot | None) -> Commit | None:
        """The merge of the disk with `head`, as the commit on top of it (None: the
        head already holds it). Called again with the new head after a lost race."""
        nonlocal merged, conflicts
        remote = memo.trees.load(repo, head.commit.tree) if head else {}
        base = {p: r.entry for p, r in records.items()}
        local = dict(disk.entries)
        for path in remote.keys() | base.keys():
            if path in disk.entries:
                continue
            if not managed(path, remote.get(path)) or path not in records:
                # No opinion here (excluded, ignored or never materialised): absence on
                # this device is not a delete.
                local[path] = base[path] = remote[path] if path in remote else base[path]
        m = merge(base, local, remote, device.name)
        merged, conflicts = m.merged, m.conflicts
        if head is not None and same_state(merged, remote):
            return None
        return Commit(
            kind="sync",
            tree=flat.build(repo, merged, memo.trees if head else None),
            parents=(head.id,) if head else (),
            ref=folder.ref,
            counter=head.commit.counter + 1 if head else 1,
            time_ns=time.time_ns(),
            device_id=device.id,
            device=device.name,
            hostname=device.hostname,
            paths=(folder.name,),
            retention=head.commit.retention if head else "",  # the folder's, set by forget
        )

    def journal(commit_id: BlobId, commit: Commit) -> None:
        # If the CAS lands and the process dies before the executor's journal, these
        # rows (a local addition or deletion that is now in the head) still count.
        agreed = _agreed_now(merged, disk, records)
        state.journal_begin(folder.name, agreed, commit=(commit_id, commit.counter))

    made = book.advance(
        folder.ref, make, fault="sync.commit-stored", what=f"folder {folder.name}", stored=journal
    ).committed
    if made is not None:
        result.committed = made.id
        result.deletes_sent = sum(
            1
            for p, r in records.items()
            if p not in disk.entries and p not in merged and r.entry.type is not EntryType.DIR
        )
        result.conflicts = [os.fsdecode(c) for _, c in conflicts]

    faults.point("sync.before-apply")
    todo = plan(merged, disk.entries, disk.stats, records, managed, _name_max(root_fd))
    done = Executor(repo, root_fd, todo, state, folder.name).run()
    result.downloaded, result.moved, result.deleted = done.downloaded, done.moved, done.deleted
    result.skipped += done.skipped
    result.warnings += done.warnings
    result.stuck = {os.fsdecode(p): why for p, why in sorted(done.stuck.items())}
    memo.settled = not (
        result.skipped or result.stuck or result.warnings or disk.unreadable or disk.temps
    )
    return result


def _agreed_now(
    merged: flat.Flat, disk: Scan, records: dict[bytes, Record]
) -> dict[bytes, TreeEntry | None]:
    """The record changes the commit makes true without touching the disk: paths the
    disk already holds as merged, and records of paths gone from both."""
    out: dict[bytes, TreeEntry | None] = {}
    for p, e in merged.items():
        r = records.get(p)
        on_disk = p in disk.entries and flat.same(disk.entries[p], e)
        if on_disk and (r is None or not flat.same(r.entry, e) or r.stat != disk.stats[p]):
            out[p] = e
    for p in records:
        if p not in merged and p not in disk.entries:
            out[p] = None
    return out


def _landed(book: RefBook, ref: str) -> Callable[[tuple[BlobId, int]], bool]:
    def landed(commit: tuple[BlobId, int]) -> bool:
        """Is this commit in the ref's history (did its CAS land before the kill)?"""
        commit_id, counter = commit
        _, head = book.head(ref)
        if head is None:
            return False
        for snap in history.chain(book.commits, head):
            if snap.id == commit_id:
                return True
            if snap.commit.counter <= counter:
                return False
        return False

    return landed


def _name_max(root_fd: int) -> int:
    try:
        return os.fpathconf(root_fd, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def same_state(a: flat.Flat, b: flat.Flat) -> bool:
    """The same paths with the same entries for sync (flat.same): nothing to commit."""
    return a.keys() == b.keys() and all(flat.same(a[p], b[p]) for p in a)
