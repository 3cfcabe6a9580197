"""The sync tables of the client's state.db (schema: localdb_sql/0002_sync.sql and
0004_sync_journal.sql)."""

from __future__ import annotations

import os
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anysync.client.localfs import StatKey, stat_key
from anysync.client.repo.tree import EntryType, TreeEntry, sizes_problem
from anysync.client.statedb import StateDB, pack_sizes, unpack_sizes
from anysync.client.sync.flat import Trees
from anysync.errors import AlreadyExists, NotFound
from anysync.types import BLOB_ID_SIZE, BlobId

# A records row as read, and the record decoded from it, by path (SyncState.records).
Rows = dict[bytes, tuple[tuple[Any, ...], "Record"]]

__all__ = ["Folder", "Memo", "Record", "StatKey", "SyncState", "stat_key", "under"]


def _entry(path: bytes, kind: int, mode: int, mtime: int, size: int, chunks: bytes,
           target: bytes, raw_sizes: bytes) -> TreeEntry:  # fmt: skip
    ids = tuple(BlobId(chunks[i : i + BLOB_ID_SIZE]) for i in range(0, len(chunks), BLOB_ID_SIZE))
    entry = TreeEntry(
        path.rpartition(b"/")[2], EntryType(kind), mode, mtime, size, ids, target=target,
        chunk_sizes=unpack_sizes(raw_sizes),
    )  # fmt: skip
    if sizes_problem(entry):  # not known, rather than an entry no tree can hold
        return replace(entry, chunk_sizes=())
    return entry


def _columns(e: TreeEntry) -> tuple[int, int, int, int, bytes, bytes, bytes]:
    return (
        int(e.type), e.mode, e.mtime_ns, e.size, b"".join(c.raw for c in e.chunks), e.target,
        pack_sizes(e.chunk_sizes),
    )  # fmt: skip


def _record(row: tuple[Any, ...]) -> Record:
    return Record(_entry(*row[:8]), StatKey(*row[8:12]))


@dataclass(frozen=True, slots=True)
class Record:
    """What this device last agreed on for a path, and how the disk looked then."""

    entry: TreeEntry
    stat: StatKey


@dataclass(frozen=True, slots=True)
class Folder:
    name: str
    path: Path
    ref: str
    last_sync_ns: int | None
    last_error: str | None
    # Kept while this object lives: `sync run --watch` passes the same Folder to every pass.
    memo: Memo = field(default_factory=lambda: Memo(), compare=False, repr=False)


@dataclass
class Memo:
    """What a pass leaves to the next pass of the same folder in this process."""

    trees: Trees = field(default_factory=Trees)  # the head's: only changed trees load again
    # The records' rows, so that only changed ones decode; kept from a Folder's second
    # pass on (a one-shot `sync run` would only pay their memory).
    rows: Rows | None = None
    # The last pass finished with every path as it merged (nothing skipped, stuck,
    # unreadable or left over) under these exclusions: the next may read only the paths
    # inotify names. Otherwise it reads every path.
    settled: bool = False
    excluded: frozenset[bytes] = frozenset()


class SyncState:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    # ------------------------------------------------------------------ folders

    def add_folder(self, name: str, path: Path, ref: str) -> Folder:
        if self.find_folder(name) is not None:
            raise AlreadyExists(f"a sync folder named {name!r} exists already on this device")
        if any(f.path == path for f in self.folders()):
            raise AlreadyExists(f"{path} is already a sync folder")
        self._db.execute(
            "INSERT INTO sync_folders (name, path, ref) VALUES (?, ?, ?)",
            (name, os.fsencode(path), ref),
        )
        return Folder(name, path, ref, None, None)

    def remove_folder(self, name: str) -> None:
        """Stop syncing `name` on this device: its records, excludes, journal and stuck
        paths go with it (ON DELETE CASCADE); the files on disk and the folder on the
        server stay."""
        self._db.execute("DELETE FROM sync_folders WHERE name = ?", (name,))

    def folders(self) -> list[Folder]:
        rows = self._db.execute(
            "SELECT name, path, ref, last_sync_ns, last_error FROM sync_folders ORDER BY name"
        ).fetchall()
        return [Folder(r[0], Path(os.fsdecode(r[1])), r[2], r[3], r[4]) for r in rows]

    def find_folder(self, name: str) -> Folder | None:
        return next((f for f in self.folders() if f.name == name), None)

    def folder_for(self, path: Path) -> tuple[Folder, bytes]:
        """The folder containing `path`, and the path relative to it."""
        absolute = Path(os.path.abspath(path))
        for f in self.folders():
            if absolute == f.path or f.path in absolute.parents:
                return f, os.fsencode(absolute.relative_to(f.path)) if absolute != f.path else b""
        raise NotFound(f"{path} is not inside a sync folder; see `anysync sync list`")

    def finished(self, name: str, when_ns: int, error: str | None) -> None:
        if error is None:
            self._db.execute(
                "UPDATE sync_folders SET last_sync_ns = ?, last_error = NULL WHERE name = ?",
                (when_ns, name),
            )
        else:
            self._db.execute("UPDATE sync_folders SET last_error = ? WHERE name = ?", (error, name))

    # ------------------------------------------------------------------ files

    def records(self, folder: str, rows: Rows | None = None) -> dict[bytes, Record]:
        """The folder's records. `rows`: the rows and records of an earlier call, kept by
        the caller; a row read again unchanged gives its record back without decoding it
        (the dearest part of a pass in a large folder). Updated to this call's."""
        found = self._db.execute(
            "SELECT path, type, mode, mtime_ns, size, chunks, target, chunk_sizes,"
            " ino, disk_size, disk_mtime_ns, ctime_ns FROM sync_files WHERE folder = ?",
            (folder,),
        )
        if rows is None:
            return {r[0]: _record(r) for r in found}
        out: dict[bytes, Record] = {}
        kept: Rows = {}
        for r in found:
            old = rows.get(r[0])
            record = old[1] if old is not None and old[0] == r else _record(r)
            out[r[0]] = record
            kept[r[0]] = (r, record)
        rows.clear()
        rows.update(kept)
        return out

    def save_records(
        self,
        folder: str,
        put: dict[bytes, Record],
        drop: set[bytes],
        settled: set[bytes] | None = None,
        stuck: dict[bytes, str] | None = None,
    ) -> None:
        """One transaction: records put and dropped, the journal rows of `settled` paths
        deleted, and (when given) the folder's stuck paths replaced."""
        with self._db.transaction():
            self._write_records(folder, put, drop)
            self._db.executemany(
                "DELETE FROM sync_journal WHERE folder = ? AND path = ?",
                [(folder, p) for p in settled or ()],
            )
            if stuck is not None:
                self._db.execute("DELETE FROM sync_stuck WHERE folder = ?", (folder,))
                self._db.executemany(
                    "INSERT INTO sync_stuck VALUES (?, ?, ?)",
                    [(folder, p, why) for p, why in stuck.items()],
                )

    def _write_records(self, folder: str, put: dict[bytes, Record], drop: set[bytes]) -> None:
        self._db.executemany(
            "DELETE FROM sync_files WHERE folder = ? AND path = ?", [(folder, p) for p in drop]
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO sync_files (folder, path, type, mode, mtime_ns, size,"
            " chunks, target, chunk_sizes, ino, ctime_ns, disk_mtime_ns, disk_size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    folder,
                    p,
                    *_columns(r.entry),
                    r.stat.ino,
                    r.stat.ctime_ns,
                    r.stat.mtime_ns,
                    r.stat.size,
                )
                for p, r in put.items()
            ],
        )

    # ------------------------------------------------------------------ journal

    def journal_begin(
        self,
        folder: str,
        intents: dict[bytes, TreeEntry | None],
        put: dict[bytes, Record] | None = None,
        drop: set[bytes] | None = None,
        commit: tuple[BlobId, int] | None = None,
    ) -> None:
        """Commit what the pass is about to put at each path (None: make it absent)
        before the first change on disk (or, with `commit`, before the ref's CAS), with
        the records that need no disk change. Replaces the folder's earlier intents."""
        cid, counter = (commit[0].raw, commit[1]) if commit else (None, None)
        rows = [
            (
                folder,
                p,
                *((None, 0, 0, 0, b"", b"", b"") if e is None else _columns(e)),
                cid,
                counter,
            )
            for p, e in intents.items()
        ]
        with self._db.transaction(durable=True):  # on disk before the disk changes
            self._write_records(folder, put or {}, drop or set())
            self._db.execute("DELETE FROM sync_journal WHERE folder = ?", (folder,))
            self._db.executemany(
                "INSERT INTO sync_journal (folder, path, type, mode, mtime_ns, size, chunks,"
                " target, chunk_sizes, commit_id, counter)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def journal(
        self, folder: str
    ) -> tuple[dict[bytes, TreeEntry | None], tuple[BlobId, int] | None]:
        """The intents left by a killed pass, and the commit they depend on (if any)."""
        rows = self._db.execute(
            "SELECT path, type, mode, mtime_ns, size, chunks, target, chunk_sizes,"
            " commit_id, counter FROM sync_journal WHERE folder = ?",
            (folder,),
        ).fetchall()
        intents = {r[0]: None if r[1] is None else _entry(*r[:8]) for r in rows}
        commit = next(((BlobId(r[8]), r[9]) for r in rows if r[8] is not None), None)
        return intents, commit

    def clear_journal(self, folder: str) -> None:
        self._db.execute("DELETE FROM sync_journal WHERE folder = ?", (folder,))

    def stuck(self, folder: str) -> dict[bytes, str]:
        rows = self._db.execute("SELECT path, reason FROM sync_stuck WHERE folder = ?", (folder,))
        return {p: why for p, why in rows}

    def drop_records_under(self, folder: str, prefix: bytes) -> None:
        self._db.execute(
            "DELETE FROM sync_files WHERE folder = ? AND (path = ? OR substr(path, 1, ?) = ?)",
            (folder, prefix, len(prefix) + 1, prefix + b"/"),
        )

    # ------------------------------------------------------------------ selective sync

    def excludes(self, folder: str) -> set[bytes]:
        rows = self._db.execute("SELECT path FROM sync_excludes WHERE folder = ?", (folder,))
        return {r[0] for r in rows}

    def set_excluded(self, folder: str, path: bytes, excluded: bool) -> None:
        if excluded:
            self._db.execute("INSERT OR IGNORE INTO sync_excludes VALUES (?, ?)", (folder, path))
        else:
            self._db.execute(
                "DELETE FROM sync_excludes WHERE folder = ? AND path = ?", (folder, path)
            )


def under(path: bytes, prefixes: AbstractSet[bytes]) -> bool:
    """Is `path` one of `prefixes` or inside one of them? b"" is the folder itself, which
    holds every path (a scan that could not read the folder knows nothing in it)."""
    while True:
        if path in prefixes:
            return True
        if not path:
            return False
        path = path.rpartition(b"/")[0]
