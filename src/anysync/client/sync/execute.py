"""Carry out a sync plan over the local file-system module, journaled for crash safety.

1. The intents (per path: the entry it will hold, or absent) are committed to the journal
   before the first change on disk.
2. Each action re-checks its path's stat right before its syscall (localfs), so a file
   the user changed after the scan is skipped, never overwritten.
3. The record of each applied change is saved right after it, in the transaction that
   deletes its intent; the stuck paths and the rest of the journal at the end. A pass
   killed between a change and its record leaves that intent, which the next pass
   settles against the disk before merging (`settle`): an entry the disk holds as
   intended becomes its record, an intended-absent path that is absent loses its record.
   So a killed pass neither resurrects a deletion nor invents a conflict.
docs/design.md §8 has the full argument.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from anysync import faults
from anysync.client import localfs
from anysync.client.repo.repository import Repository, chunks_of
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.sync.flat import Flat, parent_of, same
from anysync.client.sync.plan import Action, Op, Plan
from anysync.client.sync.state import Record, SyncState
from anysync.errors import AnySyncError
from anysync.types import BlobId, BlobKind

DOWNLOAD_BATCH = 32 * 1024 * 1024


@dataclass
class Applied:
    downloaded: int = 0
    moved: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)  # changed meanwhile: next pass
    warnings: list[str] = field(default_factory=list)
    stuck: dict[bytes, str] = field(default_factory=dict)


def settle(
    state: SyncState,
    folder: str,
    disk: Flat,
    stats: dict[bytes, localfs.StatKey],
    records: dict[bytes, Record],
    landed: Callable[[tuple[BlobId, int]], bool],
) -> None:
    """Settle a killed pass's journal against the disk (updates `records` in place).
    Intents written before a CAS count only if `landed` says that commit is in the
    folder's history."""
    intents, commit = state.journal(folder)
    if not intents:
        return
    put: dict[bytes, Record] = {}
    drop: set[bytes] = set()
    if commit is None or landed(commit):
        for p, e in intents.items():
            if e is None and p not in disk and p in records:
                drop.add(p)
            elif e is not None and p in disk and _holds(disk[p], e):
                put[p] = Record(e, stats[p])
    state.save_records(folder, put, drop, settled=set(intents))
    for p in drop:
        del records[p]
    records.update(put)


def _holds(on_disk: TreeEntry, intended: TreeEntry) -> bool:
    if intended.type is EntryType.DIR:
        return on_disk.type is EntryType.DIR
    return same(on_disk, intended)


class Executor:
    def __init__(
        self, repo: Repository, root_fd: int, plan: Plan, state: SyncState, folder: str
    ) -> None:
        self.repo = repo
        self.root_fd = root_fd
        self.plan = plan
        self.state = state
        self.folder = folder
        self.done = Applied(stuck=dict(plan.stuck))
        self.failed: set[bytes] = set()
        # A path removed for a type change keeps its intent (the new entry) until the
        # new entry is written.
        self.recreated = {a.path for a in plan.actions if a.op is not Op.REMOVE}

    def run(self) -> Applied:
        intents = self.plan.intents()
        # Rows that need no disk change are true now (the merged state is committed):
        # saved with the journal, so that a kill later cannot undo them.
        early_drop = {p for p in self.plan.drop if p not in intents}
        self.state.journal_begin(self.folder, intents, self.plan.keep, early_drop)
        downloads = []
        for a in self.plan.actions:
            if self._blocked(a):
                continue
            if a.op is Op.DOWNLOAD:
                downloads.append(a)
            else:
                self._try(a, functools.partial(self._apply, a))
        self._download(downloads)
        faults.point("sync.before-records")
        # Failed actions leave their records as they were; their intents go now.
        self.state.save_records(self.folder, {}, set(), set(intents), self.done.stuck)
        return self.done

    def _saved(self, path: bytes, record: Record | None, moved_from: bytes = b"") -> None:
        """The record of one applied change, in the transaction that settles its intent:
        a kill leaves at most the change in flight to the journal's settlement."""
        put = {path: record} if record is not None else {}
        gone = {path} if record is None else set()
        if moved_from:
            gone.add(moved_from)
        settled = put.keys() | (gone - self.recreated)
        self.state.save_records(self.folder, put, gone, settled=settled)

    def _blocked(self, a: Action) -> bool:
        """A dependent of a failed action does not run: its path is stuck."""
        p = parent_of(a.path)
        while p:
            if p in self.failed:
                self.failed.add(a.path)
                self.done.stuck[a.path] = f"{os.fsdecode(p)} could not be made a directory"
                return True
            p = parent_of(p)
        if a.needs is not None and a.needs in self.failed:
            self.failed.add(a.path)
            return True
        return False

    def _apply(self, a: Action) -> None:
        fd = self.root_fd
        e = a.entry
        if a.op is Op.MOVE:
            assert e is not None and a.expect_src is not None
            st = localfs.move(fd, a.src, a.path, a.expect_src, a.expect)
            self._saved(a.path, Record(e, st), moved_from=a.src)
            self.done.moved += 1
        elif a.op is Op.REMOVE:
            localfs.remove(fd, a.path, a.expect, a.is_dir)
            self._saved(a.path, None)
            self.done.deleted += 1
        elif a.op is Op.MKDIR:
            assert e is not None
            self._saved(a.path, Record(e, localfs.make_dir(fd, a.path, e.mode)))
        elif a.op is Op.SYMLINK:
            assert e is not None
            st = localfs.write_symlink(fd, a.path, e.target, e.mtime_ns, a.expect)
            self._saved(a.path, Record(e, st))

    def _download(self, actions: list[Action]) -> None:
        batch: list[Action] = []
        size = 0
        for a in actions:
            assert a.entry is not None
            if a.entry.size > DOWNLOAD_BATCH:  # streams: bounded memory, overlapped reads
                chunks = self.repo.stream(a.entry.chunks, a.entry.size)
                self._try(a, functools.partial(self._write, a, chunks))
                continue
            batch.append(a)
            size += a.entry.size
            if size >= DOWNLOAD_BATCH:
                self._flush(batch)
                batch, size = [], 0
        if batch:
            self._flush(batch)

    def _flush(self, batch: list[Action]) -> None:
        ids = [c for a in batch if a.entry for c in a.entry.chunks]
        blobs = self.repo.load_many(BlobKind.DATA, ids)
        for a in batch:
            assert a.entry is not None
            chunks = chunks_of(blobs, a.entry.chunks)
            self._try(a, functools.partial(self._write, a, chunks))

    def _write(self, a: Action, chunks: Iterator[bytes]) -> None:
        e = a.entry
        assert e is not None
        st = localfs.write_file(
            self.root_fd, a.path, chunks, e.size, e.mode, e.mtime_ns, a.expect,
            partial_fault="sync.file-partial",
        )  # fmt: skip
        self._saved(a.path, Record(e, st))
        self.done.downloaded += 1
        faults.point("sync.apply-file")

    def _try(self, a: Action, op: Callable[[], None]) -> None:
        """Run one action; a failure affects that path (and what depends on it) only."""
        shown = os.fsdecode(a.path)
        try:
            op()
            return
        except localfs.ChangedMeanwhile:
            self.done.skipped.append(shown)
        except localfs.NotEmpty:
            self.done.stuck[a.path] = "holds files that do not sync; kept"
        except AnySyncError as exc:
            self.done.warnings.append(f"{shown}: {exc.message}")
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            if exc.errno == errno.ENAMETOOLONG:
                self.done.stuck[a.path] = "name too long for this file system"
            else:
                self.done.warnings.append(f"{shown}: {exc.strerror or exc}")
        self.failed.add(a.path)  # its record stays as it was (a removal's too: not re-added)
        if a.op is Op.MOVE:
            self.failed.add(a.src)
