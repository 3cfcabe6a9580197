"""Scan a sync folder: what is on disk now, as entries, reading only what changed.

A file whose stat matches its record is not read. A changed or new file is chunked and
its chunks are queued for upload (the repository skips those the server holds).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from anysync.client.chunker import Chunker
from anysync.client.localfs import is_temp
from anysync.client.repo.repository import Repository
from anysync.client.repo.tree import EntryType, TreeEntry, check_name
from anysync.client.sync.ignore import IgnoreRules
from anysync.client.sync.state import Record, StatKey, stat_key, under
from anysync.types import BlobId, BlobKind

log = logging.getLogger(__name__)


@dataclass
class Scan:
    entries: dict[bytes, TreeEntry] = field(default_factory=dict)  # managed paths on disk
    stats: dict[bytes, StatKey] = field(default_factory=dict)
    files_read: int = 0
    warnings: list[str] = field(default_factory=list)
    temps: list[bytes] = field(default_factory=list)  # leftover temp files of a killed pass


def scan(
    root: Path,
    rules: IgnoreRules,
    excluded: set[bytes],
    records: dict[bytes, Record],
    repo: Repository,
    chunker: Chunker,
) -> Scan:
    out = Scan()
    # A file inside a renamed or moved directory keeps its whole stat (inode, size, mtime
    # and ctime): reuse its chunk list instead of reading it again. A file renamed itself
    # gets a new ctime and is read again: a same-size edit that restores the mtime also
    # changes only the ctime, so matching without it would keep stale chunks (#20.6).
    by_stat = {r.stat: r for r in records.values() if r.entry.type is EntryType.FILE}

    def walk(directory: bytes, prefix: bytes) -> None:
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            out.warnings.append(f"cannot read {os.fsdecode(directory)}: {exc.strerror}")
            return
        for child in children:
            rel = prefix + child.name
            if is_temp(child.name):
                out.temps.append(rel)
                continue
            try:
                check_name(child.name)
                st = child.stat(follow_symlinks=False)
            except Exception as exc:  # unreadable entry or a name we cannot store
                out.warnings.append(f"skipping {os.fsdecode(rel)}: {exc}")
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if under(rel, excluded) or rules.ignored(rel, is_dir):
                continue
            record = records.get(rel) or by_stat.get(stat_key(st))
            entry = _entry(child.path, rel, st, record, repo, chunker, out)
            if entry is None:
                continue
            out.entries[rel] = entry
            out.stats[rel] = stat_key(st)
            if is_dir:
                walk(child.path, rel + b"/")

    walk(os.fsencode(root), b"")
    return out


def _entry(
    full: bytes,
    rel: bytes,
    st: os.stat_result,
    record: Record | None,
    repo: Repository,
    chunker: Chunker,
    out: Scan,
) -> TreeEntry | None:
    name = rel.rpartition(b"/")[2]
    if stat.S_ISDIR(st.st_mode):
        return TreeEntry(name, EntryType.DIR, st.st_mode & 0o7777, 0)
    if stat.S_ISLNK(st.st_mode):
        return TreeEntry(name, EntryType.SYMLINK, 0o777, st.st_mtime_ns, target=os.readlink(full))
    if not stat.S_ISREG(st.st_mode):
        return None
    if record is not None and record.stat == stat_key(st) and record.entry.type is EntryType.FILE:
        # A chmod or rename changes no content: keep the chunks, take name and mode anew.
        return replace(record.entry, name=name, mode=st.st_mode & 0o7777)
    try:
        chunks, size = _read(full, st.st_size, repo, chunker)
    except OSError as exc:
        out.warnings.append(f"cannot read {os.fsdecode(rel)}: {exc.strerror}")
        return None
    out.files_read += 1
    return TreeEntry(name, EntryType.FILE, st.st_mode & 0o7777, st.st_mtime_ns, size, chunks)


def _read(
    path: bytes, size_hint: int, repo: Repository, chunker: Chunker
) -> tuple[tuple[BlobId, ...], int]:
    chunks = []
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        for piece in chunker.file_chunks(f, size_hint):
            chunks.append(repo.save(BlobKind.DATA, piece))
            size += len(piece)
    return tuple(chunks), size


def pending(
    root: Path, rules: IgnoreRules, excluded: set[bytes], records: dict[bytes, Record]
) -> dict[bytes, str]:
    """Paths that differ from their records, by stat alone (nothing is read).

    Values: "new", "modified" or "deleted".
    """
    out: dict[bytes, str] = {}
    seen: set[bytes] = set()

    def walk(directory: bytes, prefix: bytes) -> None:
        try:
            with os.scandir(directory) as it:
                children = list(it)
        except OSError:
            return
        for child in children:
            rel = prefix + child.name
            try:
                st = child.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if under(rel, excluded) or rules.ignored(rel, is_dir):
                continue
            seen.add(rel)
            record = records.get(rel)
            if record is None:
                out[rel] = "new"
            elif not is_dir and record.stat != stat_key(st):
                out[rel] = "modified"
            if is_dir:
                walk(child.path, rel + b"/")

    walk(os.fsencode(root), b"")
    for rel in records:
        if rel not in seen and not under(rel, excluded):
            out[rel] = "deleted"
    return out
