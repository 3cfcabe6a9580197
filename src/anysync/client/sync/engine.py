"""One sync pass of one folder: scan → merge with the ref's head → commit by
compare-and-swap → apply to disk → remember the agreed state.

The commit goes to the server before anything is written locally, so a pass killed at
any point loses nothing: local changes are either in a commit or still on disk and
still differ from their records; remote changes are applied again by the next pass.
A remote head is accepted only after the rollback check, and every tree of it is
decoded (names checked) before the first local file is touched.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

from anysync import faults
from anysync.client.chunker import Chunker
from anysync.client.repo import history
from anysync.client.repo.commit import Commit
from anysync.client.repo.repository import Repository, chunks_of
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.client.sync import flat, fsops
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.merge import merge
from anysync.client.sync.scan import Scan, scan
from anysync.client.sync.state import Folder, Record, StatKey, SyncState, under
from anysync.errors import AnySyncError, Conflict, NotFound
from anysync.types import BlobId, BlobKind

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 8
DOWNLOAD_BATCH = 32 * 1024 * 1024


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
    deleted: int = 0
    conflicts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # changed meanwhile: next pass
    warnings: list[str] = field(default_factory=list)


def folder_ref(repo: Repository, name: str) -> str:
    return "s-" + repo.blob_id(b"sync\0" + name.encode()).hex()[:32]


def run_pass(repo: Repository, db: StateDB, folder: Folder, device: Device) -> PassResult:
    state = SyncState(db)
    root = folder.path
    if not root.is_dir():
        raise NotFound(f"sync folder {root} is missing; create it or remove it from sync")
    rules = IgnoreRules.load(root)
    excluded = state.excludes(folder.name)
    records = state.records(folder.name)
    disk = scan(root, rules, excluded, records, repo, Chunker(repo.keys.chunker_seed()))
    result = PassResult(warnings=list(disk.warnings))
    result.uploaded_files = disk.files_read

    def managed(path: bytes, entry: TreeEntry | None) -> bool:
        is_dir = entry is not None and entry.type is EntryType.DIR
        return not under(path, excluded) and not rules.ignored(path, is_dir)

    for _ in range(CAS_ATTEMPTS):
        version, head = history.verified_head(repo, db, folder.ref)
        remote = flat.load(repo, head.commit.tree) if head else {}
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
        merged = m.merged
        if head is not None and _same_state(merged, remote):
            break
        new_root = flat.build(repo, merged)

        def make(h: history.Snapshot | None, tree: BlobId = new_root) -> Commit:
            return Commit(
                kind="sync",
                tree=tree,
                parents=(h.id,) if h else (),
                ref=folder.ref,
                counter=h.commit.counter + 1 if h else 1,
                time_ns=time.time_ns(),
                device_id=device.id,
                device=device.name,
                hostname=device.hostname,
                paths=(folder.name,),
            )

        commit = make(head)
        commit_id = repo.save_commit(commit)
        repo.finish()  # content and trees are stored before the ref moves
        faults.point("sync.commit-stored")
        try:
            repo.remote.update_ref(folder.ref, version, commit_id)
        except Conflict:
            continue  # another device was faster: merge with its head and try again
        db.set_seen(folder.ref, commit_id, commit.counter)
        result.committed = commit_id
        result.conflicts = [os.fsdecode(c) for _, c in m.conflicts]
        break
    else:
        raise Conflict(f"folder {folder.name} kept changing on the server; try again")

    faults.point("sync.before-apply")
    put, drop = _apply(repo, root, merged, disk, records, managed, result)
    faults.point("sync.before-records")
    state.save_records(folder.name, put, drop)
    return result


def _same_state(a: flat.Flat, b: flat.Flat) -> bool:
    return a.keys() == b.keys() and all(flat.same(a[p], b[p]) for p in a)


def _apply(
    repo: Repository,
    root: os.PathLike[str],
    merged: flat.Flat,
    disk: Scan,
    records: dict[bytes, Record],
    managed: object,
    result: PassResult,
) -> tuple[dict[bytes, Record], set[bytes]]:
    """Make the disk match `merged` for managed paths; return the records to keep."""
    assert callable(managed)
    put: dict[bytes, Record] = {}
    drop: set[bytes] = {p for p in records if p not in merged}
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        wanted = {
            p: e
            for p, e in merged.items()
            if managed(p, e) and not flat.same(disk.entries.get(p), e)
        }
        for p, e in merged.items():
            if p in disk.entries and p not in wanted and managed(p, e):
                agreed = Record(e, disk.stats[p])  # already as agreed
                if records.get(p) != agreed:  # write only rows that change
                    put[p] = agreed
        gone = [p for p in disk.entries if p not in merged]
        # Local files whose content is wanted at another path: rename, don't download.
        sources: dict[tuple[BlobId, ...], list[bytes]] = defaultdict(list)
        for p in gone + [p for p in wanted if p in disk.entries]:
            e = disk.entries[p]
            if e.type is EntryType.FILE and e.chunks:
                sources[e.chunks].append(p)
        moved_away: set[bytes] = set()
        # New paths first, so that a file being replaced moves to its conflict copy
        # before the replacement is written.
        order = sorted(wanted, key=lambda p: (p in disk.entries, p.count(b"/"), p))
        downloads: list[bytes] = []
        for p in order:
            e = wanted[p]
            if e.type is EntryType.DIR:
                _try(
                    result,
                    p,
                    lambda p=p, e=e: put.__setitem__(
                        p, Record(e, fsops.make_dir(root_fd, p, e.mode))
                    ),
                )
                continue
            if e.type is EntryType.FILE:
                src = next(
                    (s for s in sources.get(e.chunks, []) if s != p and s not in moved_away), None
                )
                if src is not None:

                    def mv(src: bytes = src, p: bytes = p, e: TreeEntry = e) -> None:
                        st = fsops.move(root_fd, src, p, disk.stats[src], disk.stats.get(p))
                        moved_away.add(src)
                        put[p] = Record(e, st)
                        result.moved += 1

                    if _try(result, p, mv):
                        continue
                downloads.append(p)
            else:
                _try(
                    result,
                    p,
                    lambda p=p, e=e: put.__setitem__(
                        p,
                        Record(
                            e,
                            fsops.write_symlink(
                                root_fd, p, e.target, e.mtime_ns, disk.stats.get(p)
                            ),
                        ),
                    ),
                )
        # A target whose old file was moved away to another path is now empty.
        expected = {p: None if p in moved_away else disk.stats.get(p) for p in wanted}
        _download(repo, root_fd, downloads, wanted, expected, put, result)
        for p in sorted(gone, key=lambda p: -p.count(b"/")):
            if p in moved_away:
                continue
            e = disk.entries[p]

            def rm(p: bytes = p, e: TreeEntry = e) -> None:
                fsops.remove(root_fd, p, disk.stats[p], e.type is EntryType.DIR)
                result.deleted += 1

            if not _try(result, p, rm, quiet_errnos=(errno.ENOTEMPTY,)):
                drop.discard(p)  # still on disk: keep its record so it is not re-added
    finally:
        os.close(root_fd)
    drop -= put.keys()
    return put, drop


def _download(
    repo: Repository,
    root_fd: int,
    paths: list[bytes],
    wanted: flat.Flat,
    expected: dict[bytes, StatKey | None],
    put: dict[bytes, Record],
    result: PassResult,
) -> None:
    batch: list[bytes] = []
    size = 0

    def flush() -> None:
        ids = [c for p in batch for c in wanted[p].chunks]
        blobs = repo.load_many(BlobKind.DATA, ids)
        for p in batch:
            e = wanted[p]

            def write(p: bytes = p, e: TreeEntry = e) -> None:
                st = fsops.write_file(
                    root_fd,
                    p,
                    chunks_of(blobs, e.chunks),
                    e.size,
                    e.mode,
                    e.mtime_ns,
                    expected[p],
                )
                put[p] = Record(e, st)
                result.downloaded += 1
                faults.point("sync.apply-file")

            _try(result, p, write)
        batch.clear()

    for p in paths:
        e = wanted[p]
        if e.size > DOWNLOAD_BATCH:  # a large file streams: bounded memory, overlapped reads

            def write_large(p: bytes = p, e: TreeEntry = e) -> None:
                chunks = repo.stream(e.chunks, e.size)
                st = fsops.write_file(root_fd, p, chunks, e.size, e.mode, e.mtime_ns, expected[p])
                put[p] = Record(e, st)
                result.downloaded += 1
                faults.point("sync.apply-file")

            _try(result, p, write_large)
            continue
        batch.append(p)
        size += e.size
        if size >= DOWNLOAD_BATCH:
            flush()
            size = 0
    if batch:
        flush()


def _try(result: PassResult, path: bytes, op: object, quiet_errnos: tuple[int, ...] = ()) -> bool:
    """Run one disk operation; a failure affects that path only, never the pass."""
    assert callable(op)
    shown = os.fsdecode(path)
    try:
        op()
        return True
    except fsops.ChangedMeanwhile:
        result.skipped.append(shown)
    except AnySyncError as exc:
        result.warnings.append(f"{shown}: {exc.message}")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        if exc.errno not in quiet_errnos:
            result.warnings.append(f"{shown}: {exc.strerror or exc}")
    return False
