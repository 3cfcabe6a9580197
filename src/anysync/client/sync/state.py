"""The sync tables of the client's state.db (schema: localdb_sql/0002_sync.sql)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.client.statedb import StateDB
from anysync.errors import AlreadyExists, NotFound
from anysync.types import BLOB_ID_SIZE, BlobId

StatKey = tuple[int, int, int, int]  # ino, size, mtime_ns, ctime_ns


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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


class SyncState:
    def __init__(self, db: StateDB) -> None:
        self._conn = db.connection
        self._db = db

    # ------------------------------------------------------------------ folders

    def add_folder(self, name: str, path: Path, ref: str) -> Folder:
        if self.find_folder(name) is not None:
            raise AlreadyExists(f"a sync folder named {name!r} exists already on this device")
        if any(f.path == path for f in self.folders()):
            raise AlreadyExists(f"{path} is already a sync folder")
        self._conn.execute(
            "INSERT INTO sync_folders (name, path, ref) VALUES (?, ?, ?)",
            (name, os.fsencode(path), ref),
        )
        return Folder(name, path, ref, None, None)

    def folders(self) -> list[Folder]:
        rows = self._conn.execute(
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
            self._conn.execute(
                "UPDATE sync_folders SET last_sync_ns = ?, last_error = NULL WHERE name = ?",
                (when_ns, name),
            )
        else:
            self._conn.execute(
                "UPDATE sync_folders SET last_error = ? WHERE name = ?", (error, name)
            )

    # ------------------------------------------------------------------ files

    def records(self, folder: str) -> dict[bytes, Record]:
        rows = self._conn.execute(
            "SELECT path, type, mode, mtime_ns, size, chunks, target, ino, disk_size,"
            " disk_mtime_ns, ctime_ns FROM sync_files WHERE folder = ?",
            (folder,),
        )
        out = {}
        for path, kind, mode, mtime, size, chunks, target, ino, dsize, dmtime, ctime in rows:
            ids = tuple(
                BlobId(chunks[i : i + BLOB_ID_SIZE]) for i in range(0, len(chunks), BLOB_ID_SIZE)
            )
            entry = TreeEntry(
                path.rpartition(b"/")[2], EntryType(kind), mode, mtime, size, ids, target=target
            )
            out[path] = Record(entry, (ino, dsize, dmtime, ctime))
        return out

    def save_records(self, folder: str, put: dict[bytes, Record], drop: set[bytes]) -> None:
        with self._db.transaction():
            self._conn.executemany(
                "DELETE FROM sync_files WHERE folder = ? AND path = ?", [(folder, p) for p in drop]
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO sync_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        folder,
                        p,
                        int(r.entry.type),
                        r.entry.mode,
                        r.entry.mtime_ns,
                        r.entry.size,
                        b"".join(c.raw for c in r.entry.chunks),
                        r.entry.target,
                        r.stat[0],
                        r.stat[3],
                        r.stat[2],
                        r.stat[1],
                    )
                    for p, r in put.items()
                ],
            )

    def drop_records_under(self, folder: str, prefix: bytes) -> None:
        self._conn.execute(
            "DELETE FROM sync_files WHERE folder = ? AND (path = ? OR substr(path, 1, ?) = ?)",
            (folder, prefix, len(prefix) + 1, prefix + b"/"),
        )

    # ------------------------------------------------------------------ selective sync

    def excludes(self, folder: str) -> set[bytes]:
        rows = self._conn.execute("SELECT path FROM sync_excludes WHERE folder = ?", (folder,))
        return {r[0] for r in rows}

    def set_excluded(self, folder: str, path: bytes, excluded: bool) -> None:
        if excluded:
            self._conn.execute("INSERT OR IGNORE INTO sync_excludes VALUES (?, ?)", (folder, path))
        else:
            self._conn.execute(
                "DELETE FROM sync_excludes WHERE folder = ? AND path = ?", (folder, path)
            )


def under(path: bytes, prefixes: set[bytes]) -> bool:
    """Is `path` one of `prefixes` or inside one of them?"""
    while path:
        if path in prefixes:
            return True
        path = path.rpartition(b"/")[0]
    return False
